//! `mandate`: the authorization server and its local tools (DESIGN.md section 11).

mod decode;
mod redis_acl;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mandate_server::config::ConfigSource;
use mandate_server::{dev, AppState, BuildOptions, Listeners, Settings, Signals};
use mandate_token::{SigningAlgorithm, SigningKey};

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
    Serve {
        /// The configuration file; nothing else is read (plus MANDATE__… overrides).
        #[arg(long)]
        config: Option<PathBuf>,
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
    /// Tokens, locally.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
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
        #[arg(long, value_enum, default_value = "ES256")]
        alg: AlgArg,
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
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
        Command::Serve { config } => serve(config),
        Command::Keys {
            command: KeysCommand::Generate { alg, out },
        } => report(generate_key(alg.into(), &out)),
        Command::Redis {
            command: RedisCommand::Acl { user },
        } => report(redis_acl::print(&user)),
        Command::Token {
            command: TokenCommand::Decode { token, json },
        } => report(decode_token(&token, json)),
    }
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MANDATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn serve(config: Option<PathBuf>) -> ExitCode {
    init_tracing();
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
    runtime.block_on(async move {
        let (settings, source, extras) = match config {
            Some(path) => match Settings::load(&path) {
                Ok(settings) => (settings, ConfigSource::File(path), None),
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            },
            None => match dev::development_settings() {
                Ok((settings, extras)) => (settings, ConfigSource::Development, Some(extras)),
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            },
        };
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
        let kid = state.keys.active().kid().to_owned();
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
            "mandate listening on http://{} (issuer {issuer}, signing key {kid}); admin on http://{}",
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
    eprintln!(
        "  admin secret  {} (role manage, this run only)",
        extras.admin_secret
    );
    eprintln!("{line}");
}

fn generate_key(algorithm: SigningAlgorithm, out: &PathBuf) -> anyhow::Result<()> {
    let pem = SigningKey::generate_pem(algorithm).context("generating the key")?;
    let key = SigningKey::from_pkcs8_pem(algorithm, &pem).context("reading the generated key")?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| {
            format!(
                "creating {} (an existing file is never overwritten)",
                out.display()
            )
        })?;
    file.write_all(&pem)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {} key {} to {}", algorithm, key.kid(), out.display());
    Ok(())
}
