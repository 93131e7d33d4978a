//! `mandate`: the authorization server and its local tools (DESIGN.md section 11).

mod admin_cli;
mod decode;
mod demo;
mod keys;
mod redis_acl;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mandate_server::config::{ConfigSource, LogFormat};
use mandate_server::{dev, AppState, BuildOptions, Listeners, Settings, Signals};
use mandate_token::SigningAlgorithm;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

#[derive(Parser)]
#[command(
    name = "mandate",
    version,
    about = "An OAuth 2.0 authorization server for AI agents that act for people"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Without --config: development mode (memory store, ephemeral key, demo
    /// agents, loopback only).
    ///
    /// Development mode takes its admin secret from MANDATE_ADMIN_SECRET when that is set (the
    /// variable the admin CLI reads), so that a script knows it before the server starts.
    Serve {
        /// The configuration file; nothing else is read (plus MANDATE__… overrides).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Development mode only: the public listener, on loopback [default: 127.0.0.1:8080];
        /// the issuer follows it.
        #[arg(long, conflicts_with = "config")]
        listen: Option<std::net::SocketAddr>,
        /// Development mode only: the admin listener, on loopback [default: 127.0.0.1:8081].
        #[arg(long, conflicts_with = "config")]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Redis helpers.
    Redis {
        #[command(subcommand)]
        command: RedisCommand,
    },
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Client secrets, locally.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Tokens, locally.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The whole story in one process, narrated: an assistant acts for alice, hands work to a
    /// booking agent, a calendar app accepts both tokens, an administrator revokes the hand-off
    /// and the app refuses the booking agent's token.
    Demo(demo::DemoArgs),
    #[command(flatten)]
    Admin(admin_cli::AdminCommand),
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Print a new client secret (256 random bits, base64url: safe in HTTP Basic without
    /// encoding) and its `secret_hash` for the configuration file. Nothing is written or sent.
    Generate {
        /// Print `{"client_secret": …, "secret_hash": …}`.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a JWT's header, claims and actor chain WITHOUT verifying anything (no signature,
    /// issuer, audience or expiry check; no network, no keys).
    Decode {
        /// The token, or `-` to read it from standard input (keeps it out of the shell history
        /// and the process list).
        token: String,
        /// Print one JSON object {"verified": false, "header", "claims", "chain"} for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new PKCS#8 PEM signing key (mode 0600; an existing file is never overwritten).
    Generate {
        /// The algorithm.
        #[arg(long, visible_alias = "algorithm", value_enum, default_value = "ES256")]
        alg: AlgArg,
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the NEXT signing key (mode 0600, never overwriting) and print the configuration
    /// change: stage it as next_key_file and SIGHUP every node (published, not signing); after
    /// verifiers' JWKS caches have refreshed, promote it to key_file with the old key in
    /// retired_key_files; drop the old key once its tokens have expired. See docs/KEYS.md.
    #[command(verbatim_doc_comment)]
    Rotate {
        /// The directory to write signing-<date>-<kid>.pem in [default: that of the configured
        /// key_file, else the current directory].
        #[arg(long, conflicts_with = "out")]
        dir: Option<PathBuf>,
        /// The exact file to write.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The algorithm [default: the configured one, else ES256]; a change of algorithm is
        /// made at promotion.
        #[arg(long, visible_alias = "alg", value_enum)]
        algorithm: Option<AlgArg>,
        /// The running configuration: print its actual paths and lifetimes (read like `serve`
        /// reads it, MANDATE__ overrides included).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RedisCommand {
    /// Print the ACL rule of the read-only Redis user for verifiers, with a new password.
    Acl {
        /// The user name.
        #[arg(long, default_value = "mandate-verifier")]
        user: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum AlgArg {
    #[value(name = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    EdDsa,
}

impl From<AlgArg> for SigningAlgorithm {
    fn from(alg: AlgArg) -> Self {
        match alg {
            AlgArg::Es256 => SigningAlgorithm::Es256,
            AlgArg::EdDsa => SigningAlgorithm::EdDsa,
        }
    }
}

/// Exit code for configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
        } => serve(
            config,
            dev::DevOverrides {
                listen,
                admin_listen,
                admin_secret: std::env::var(admin_cli::credential::SECRET_VARIABLE).ok(),
            },
        ),
        Command::Admin(command) => admin_cli::run(command),
        Command::Demo(args) => demo::run(&args),
        Command::Keys {
            command: KeysCommand::Generate { alg, out },
        } => report(keys::generate(alg.into(), &out)),
        Command::Keys {
            command:
                KeysCommand::Rotate {
                    dir,
                    out,
                    algorithm,
                    config,
                },
        } => {
            let destination = match (out, dir) {
                (Some(out), _) => keys::Destination::File(out),
                (None, Some(dir)) => keys::Destination::Dir(dir),
                (None, None) => keys::Destination::Default,
            };
            report(keys::rotate(
                algorithm.map(Into::into),
                destination,
                config.as_deref(),
            ))
        }
        Command::Redis {
            command: RedisCommand::Acl { user },
        } => report(redis_acl::print(&user)),
        Command::Token {
            command: TokenCommand::Decode { token, json },
        } => report(decode_token(&token, json)),
        Command::Secrets {
            command: SecretsCommand::Generate { json },
        } => report(generate_secret(json)),
    }
}

fn generate_secret(json: bool) -> anyhow::Result<()> {
    let secret = mandate_core::generate_secret();
    let hash = mandate_model::SecretHash::of(&secret);
    let text = if json {
        format!(
            "{}\n",
            serde_json::json!({ "client_secret": secret.as_str(), "secret_hash": hash.to_string() })
        )
    } else {
        format!(
            "client_secret  {}\nsecret_hash    {hash}\n",
            secret.as_str()
        )
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to standard output")
}

fn decode_token(argument: &str, json: bool) -> anyhow::Result<()> {
    let token = decode::read_token(argument)?;
    let decoded = decode::Decoded::parse(&token)?;
    let text = if json {
        decoded.to_json()
    } else {
        decoded.to_human()
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to standard output")
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines go to standard error through a thread of their own: a request thread formats its
/// line and queues it, and never waits on the terminal, pipe or disk behind standard error (a
/// worker blocked in `write`, or waiting for another worker's write to finish, delays every
/// request it serves). The writer thread writes what has queued up in one go. No line is dropped:
/// if the queue is full, the request thread waits. Lines still queued are written when the
/// returned guard is dropped.
///
/// `export` is a second layer with a filter of its own (the OTLP span export): `MANDATE_LOG`
/// decides the log lines only, so the step spans (level debug) cost nothing unless exported.
fn init_tracing(
    format: LogFormat,
    export: Option<Box<dyn Layer<Registry> + Send + Sync>>,
) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // About a second of lines at saturation. The queue's slots are allocated up front: the
        // default (128,000) added 4 MiB to the idle process.
        .buffered_lines_limit(8_192)
        .thread_name("mandate-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let filter = tracing_subscriber::EnvFilter::try_from_env("MANDATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt::layer().with_writer(writer);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        // Colours only for a terminal: escape codes in a log file or a collector are noise.
        LogFormat::Text => lines
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        // One object per line, with the request's span (its id, method, path, status) in it.
        LogFormat::Json => lines
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![lines];
    layers.extend(export);
    tracing_subscriber::registry().with(layers).init();
    guard
}

/// The OTLP span export of `[otel]`, sending on `runtime`, when an endpoint is configured: its
/// subscriber layer and the guard that flushes it.
#[cfg(feature = "otlp")]
type SpanExport = (
    Option<Box<dyn Layer<Registry> + Send + Sync>>,
    Option<mandate_server::otel::OtelGuard>,
);

#[cfg(feature = "otlp")]
fn span_export(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
) -> Result<SpanExport, mandate_server::otel::OtelError> {
    if settings.otel.endpoint.is_none() {
        return Ok((None, None));
    }
    let (layer, guard) = mandate_server::otel::layer(&settings.otel, runtime.handle().clone())?;
    Ok((Some(layer), Some(guard)))
}

fn serve(config: Option<PathBuf>, development: dev::DevOverrides) -> ExitCode {
    // The configuration is read first: it says how to log. Its errors go to stderr as they are.
    let (settings, source, extras) = match config {
        Some(path) => match Settings::load(&path) {
            Ok(settings) => (settings, ConfigSource::File(path), None),
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => match dev::development_settings_with(development) {
            Ok((settings, extras)) => (settings, ConfigSource::Development, Some(extras)),
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    // Declared first, so dropped last: with every line written.
    let _log_writer;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The span export sends on the runtime, so its guard (which flushes the last spans) is
    // declared after it and dropped before it.
    #[cfg(feature = "otlp")]
    let (export, _span_export) = match span_export(&settings, &runtime) {
        Ok(export) => export,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    #[cfg(not(feature = "otlp"))]
    let export = None;
    _log_writer = init_tracing(settings.log.format, export);
    runtime.block_on(async move {
        let options = BuildOptions {
            demo_idp: extras.as_ref().map(|e| e.demo_issuer_key.clone()),
            ..BuildOptions::default()
        };
        let state = match AppState::build(settings, source, options).await {
            Ok(state) => state,
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let listeners = match Listeners::bind(state.settings.listen, state.settings.admin_listen) {
            Ok(listeners) => listeners,
            Err(error) => {
                eprintln!("error: cannot bind {} / {}: {error}", state.settings.listen, state.settings.admin_listen);
                return ExitCode::FAILURE;
            }
        };
        let issuer = state.settings.issuer.clone();
        let kid = state.keys.current().active().kid().to_owned();
        let scheme = if state.tls.is_some() { "https" } else { "http" };
        let running = match mandate_server::start(state, listeners, Signals::Handle) {
            Ok(running) => running,
            Err(error) => {
                eprintln!("error: cannot start: {error}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(extras) = &extras {
            print_development_banner(&issuer, extras);
        }
        println!(
            "mandate listening on {scheme}://{} (issuer {issuer}, signing key {kid}); admin on {scheme}://{}",
            running.public_addr, running.admin_addr
        );
        match running.wait().await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

fn print_development_banner(issuer: &str, extras: &dev::DevExtras) {
    let line = "=".repeat(78);
    eprintln!("{line}");
    eprintln!("  DEVELOPMENT MODE — not for production");
    eprintln!("  memory store, ephemeral signing key, demo agents; loopback only.");
    eprintln!("  Everything is lost on exit. Use `mandate serve --config FILE` for a deployment.");
    eprintln!();
    eprintln!("  issuer        {issuer}");
    eprintln!(
        "  demo issuer   {issuer}/demo-idp (alias 'demo', key {})",
        extras.demo_issuer_key.kid()
    );
    eprintln!("                an ID token for alice, issued to the assistant:");
    eprintln!("                curl -d sub=alice -d client_id=assistant {issuer}/demo-idp/token");
    for (client, secret) in dev::DEMO_SECRETS {
        eprintln!("  client        {client:<14} secret {secret}");
    }
    eprintln!("  demo app      {}", dev::DEMO_APP);
    if extras.admin_secret_given {
        eprintln!("  admin secret  from MANDATE_ADMIN_SECRET (role manage)");
    } else {
        eprintln!(
            "  admin secret  {} (role manage, this run only)",
            extras.admin_secret
        );
    }
    eprintln!("{line}");
}
