//! The admin CLI (DESIGN.md section 11): `mandate clients|chains|revoke|consents|policies|audit`
//! over the admin API (docs/ADMIN-API.md; docs/CLI.md shows every command).
//!
//! Human tables by default, the API's JSON as is with `--json`. The admin credential comes from
//! `--credential-file FILE` or `MANDATE_ADMIN_SECRET`, never from an argument, and is never
//! printed. Exit codes: 0 success, 1 the server refused (its `error` and `message` on stderr),
//! 2 usage errors, 3 no credential or the admin API cannot be reached, 4 `ledger verify` found
//! the journal altered.

mod apply;
mod client;
pub mod credential;
mod ledger;
mod render;
mod table;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::header::IF_MATCH;
use serde_json::{json, Map, Value};

use client::{AdminClient, Request};
use credential::Credential;
pub use render::{chain_tree, outcome};

/// Exit code: the server refused the request.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: the command line (or a file it names) is unusable; clap uses it too.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no credential, or the admin API cannot be reached or understood.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: `ledger verify` found entries altered, removed, reordered or rewritten.
pub const EXIT_FINDINGS: u8 = 4;

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error.
    #[error("the server refused ({status} {error}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The API's `error` code.
        error: String,
        /// The API's `message`.
        message: String,
    },
    /// No usable admin credential.
    #[error("no admin credential: {0}")]
    NoCredential(String),
    /// The admin API could not be reached, or its answer could not be read.
    #[error("{0}")]
    Unreachable(String),
    /// An argument or a file named by one is unusable.
    #[error("{0}")]
    Usage(String),
    /// `ledger verify` found something: the report, as printed.
    #[error("the journal did not verify")]
    Findings(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused { .. } => EXIT_REFUSED,
            CliError::Usage(_) => EXIT_USAGE,
            CliError::NoCredential(_) | CliError::Unreachable(_) => EXIT_UNREACHABLE,
            CliError::Findings(_) => EXIT_FINDINGS,
        }
    }
}

/// `mandate ssf`.
#[derive(Subcommand, Debug)]
pub enum SsfCommand {
    /// Every stream: its owner, audience, delivery, status and queue (pending, dropped).
    Streams,
}

/// Options every admin command takes.
#[derive(Args, Debug)]
pub struct Connection {
    /// The admin listener.
    #[arg(
        long,
        env = "MANDATE_ADMIN_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    url: String,
    /// Read the admin credential from the first line of FILE (mode 0600) instead of
    /// MANDATE_ADMIN_SECRET. There is no flag taking the secret itself.
    #[arg(long, value_name = "FILE", global = true)]
    credential_file: Option<PathBuf>,
    /// Print the API's JSON answer as is, for scripts.
    #[arg(long, global = true)]
    json: bool,
}

/// The commands over the admin API.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Agents and resource servers: list, show, add, suspend, activate, retire.
    Clients {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Delegation chains: list, show as a tree, revoke.
    Chains {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: ChainsCommand,
    },
    /// Revoke one hop (and everything derived from it) or every delegation of a user.
    Revoke {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: RevokeCommand,
    },
    /// Stored consent grants: list, add, withdraw.
    Consents {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: ConsentsCommand,
    },
    /// Policy rows: get, put (replace all, guarded by the version), explain a decision.
    Policies {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: PoliciesCommand,
    },
    /// Shared Signals streams mandate transmits to.
    Ssf {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: SsfCommand,
    },
    /// Which apps take part: per audience, its owners, live verifiers, their modes and lag,
    /// its gate and the verdict (follows revocations, introspects, verifies only, silent);
    /// `participation gates …` lists, sets and removes the gates.
    Participation {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: Option<ParticipationCommand>,
    },
    /// Users: their standing authority (which agents can act for them now, and where).
    Subjects {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: SubjectsCommand,
    },
    /// Make the deployment hold the clients, policy rows and consent grants a configuration
    /// file names (printing the difference first); with --prune, also remove what it does not
    /// name. Applying the same file again changes nothing.
    Apply {
        #[command(flatten)]
        connection: Connection,
        #[command(flatten)]
        args: apply::ApplyArgs,
    },
    /// The ledger as evidence: export it (JSON lines or OCSF), verify it (online or from an
    /// export) — docs/EVIDENCE.md.
    Ledger {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: ledger::LedgerCommand,
    },
    /// The audit stream, newest first.
    Audit {
        #[command(flatten)]
        connection: Connection,
        /// At most this many events (server default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Only this action (e.g. `revoke.hop`).
        #[arg(long)]
        action: Option<String>,
        /// Only this actor (an admin credential's name, or `client:<id>`).
        #[arg(long)]
        actor: Option<String>,
    },
}

/// `mandate clients …`.
#[derive(Subcommand, Debug)]
pub enum ClientsCommand {
    /// List agents and resource servers, ordered by id.
    List {
        /// Only this kind.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Only this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
    },
    /// Show one client.
    Show {
        /// The client id.
        client_id: String,
    },
    /// Register a client; a generated secret is printed this once.
    Add(AddClient),
    /// active → suspended: every live token the agent appears in dies at once.
    Suspend {
        /// The client id.
        client_id: String,
    },
    /// staged or suspended → active.
    Activate {
        /// The client id.
        client_id: String,
    },
    /// → retired, for good (also revokes every live token the agent appears in).
    Retire {
        /// The client id.
        client_id: String,
    },
    /// Change a client's owners, description, keys, audiences, upstream ids, expiry or DPoP
    /// policy (PATCH); what is not given stays as it is.
    Update(UpdateClient),
    /// Rotate a secret client's secret: the new one is printed this once; the old one keeps
    /// working for the overlap.
    RotateSecret {
        /// The client id.
        client_id: String,
        /// How long the old secret still works, in seconds (server default 3600; 0 ends it now).
        #[arg(long, value_name = "SECS")]
        overlap_secs: Option<u64>,
    },
    /// Agents to look at: unused for N days, expired or expiring soon, or without owners.
    Review {
        /// Unused: no exchange and no authentication for this many days (never used: created
        /// this long ago).
        #[arg(long, default_value_t = 30)]
        unused_days: i64,
        /// Expiring: `expires_at` within this many days.
        #[arg(long, default_value_t = 7)]
        expiring_days: i64,
    },
}

/// `mandate clients add`.
#[derive(Args, Debug)]
pub struct AddClient {
    /// The new client id (`[a-z0-9][a-z0-9._-]{0,63}`).
    client_id: String,
    /// What it is.
    #[arg(long, value_enum, default_value = "agent")]
    kind: KindArg,
    /// An owner (repeat for several; at least one).
    #[arg(long = "owner", value_name = "OWNER", required = true)]
    owners: Vec<String>,
    /// What it does.
    #[arg(long)]
    description: Option<String>,
    /// How it authenticates at /token.
    #[arg(long, value_enum, default_value = "client_secret_basic")]
    auth_method: AuthMethodArg,
    /// Its public keys, a JWKS JSON file (private_key_jwt only).
    #[arg(long, value_name = "FILE")]
    jwks_file: Option<PathBuf>,
    /// Its first state (server default: staged).
    #[arg(long, value_enum)]
    state: Option<InitialStateArg>,
    /// No authentication after this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    expires_at: Option<String>,
    /// An audience it owns (resource servers; repeat for several).
    #[arg(long = "audience", value_name = "URI")]
    audiences: Vec<String>,
    /// Its client id at an upstream issuer (repeat for several).
    #[arg(long = "upstream", value_name = "ISSUER=CLIENT_ID")]
    upstreams: Vec<String>,
}

/// `mandate clients update`.
#[derive(Args, Debug)]
pub struct UpdateClient {
    /// The client id.
    client_id: String,
    /// The owners, replacing the current ones (repeat for several).
    #[arg(long = "owner", value_name = "OWNER")]
    owners: Vec<String>,
    /// What it does.
    #[arg(long)]
    description: Option<String>,
    /// Its public keys, a JWKS JSON file, replacing the current ones (private_key_jwt only).
    #[arg(long, value_name = "FILE")]
    jwks_file: Option<PathBuf>,
    /// The audiences it owns, replacing the current ones (resource servers; repeat).
    #[arg(long = "audience", value_name = "URI")]
    audiences: Vec<String>,
    /// Its client ids at upstream issuers, replacing the current ones (repeat).
    #[arg(long = "upstream", value_name = "ISSUER=CLIENT_ID")]
    upstreams: Vec<String>,
    /// No authentication after this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339", conflicts_with = "no_expiry")]
    expires_at: Option<String>,
    /// Remove the expiry.
    #[arg(long)]
    no_expiry: bool,
    /// Whether its tokens must be DPoP-bound.
    #[arg(long, value_enum)]
    dpop: Option<DpopArg>,
}

/// `--dpop`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum DpopArg {
    /// Proofs accepted, not required.
    Allowed,
    /// Every request (an agent) or every token for its audiences (a resource server) bound.
    Required,
}

/// `mandate chains …`.
#[derive(Subcommand, Debug)]
pub enum ChainsCommand {
    /// List chains, newest first.
    List {
        /// Only chains of this user (`corp|alice`).
        #[arg(long)]
        subject: Option<String>,
        /// Only chains this agent acted in.
        #[arg(long)]
        agent: Option<String>,
        /// Only chains with a hop for this audience.
        #[arg(long)]
        audience: Option<String>,
        /// Only chains in this status.
        #[arg(long, value_enum)]
        status: Option<ChainStatusArg>,
        /// Only chains started at or after this instant (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        since: Option<String>,
        /// Only chains started before this instant (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        until: Option<String>,
        /// At most this many (server default 50, at most 500).
        #[arg(long)]
        limit: Option<u32>,
        /// The `next cursor` a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show a chain as a tree of hops with their status.
    Show {
        /// The chain id (`chn_…`).
        chain_id: String,
    },
    /// Revoke a whole chain (and new exchanges of its upstream grant).
    Revoke {
        /// The chain id.
        chain_id: String,
        /// Why (recorded; at most 500 characters).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `mandate revoke …`.
#[derive(Subcommand, Debug)]
pub enum RevokeCommand {
    /// Revoke a hop and every token derived from it.
    Hop {
        /// The hop id (a token's `jti`).
        jti: String,
        /// Why (recorded; at most 500 characters).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Revoke every delegation of a user issued until now.
    Subject {
        /// The subject (`corp|alice`).
        subject: String,
        /// Why (recorded; at most 500 characters).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `mandate subjects …`.
#[derive(Subcommand, Debug)]
pub enum SubjectsCommand {
    /// Which agents can act for the user now (live chains, stored consents, their policy rows)
    /// and which apps that authority reaches.
    Authority {
        /// The subject (`corp|alice`).
        subject: String,
    },
}

/// `mandate consents …`.
#[derive(Subcommand, Debug)]
pub enum ConsentsCommand {
    /// List stored consent grants.
    List {
        /// Only grants of this user.
        #[arg(long)]
        subject: Option<String>,
        /// Only grants to this agent.
        #[arg(long)]
        actor: Option<String>,
    },
    /// Store a consent grant.
    Add {
        /// The user (`corp|alice`).
        #[arg(long)]
        subject: String,
        /// The agent it lets act.
        #[arg(long)]
        actor: String,
        /// The app.
        #[arg(long)]
        audience: String,
        /// A scope (repeat, or separate with spaces).
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        /// Its expiry (RFC 3339, in the future).
        #[arg(long, value_name = "RFC3339")]
        expires_at: String,
    },
    /// Withdraw a grant: every chain rooted on it dies.
    Withdraw {
        /// The grant id (`cns_…`).
        id: String,
    },
}

/// `mandate policies …`.
#[derive(Subcommand, Debug)]
pub enum PoliciesCommand {
    /// Print every row and the version.
    Get,
    /// Replace every row with the rows of a JSON file (what `policies get --json` prints, or a
    /// bare array of rows).
    Put {
        /// The file.
        file: PathBuf,
        /// Replace only if the current version is N (default: the file's `version`, else the
        /// version read just before).
        #[arg(long, value_name = "N")]
        if_match: Option<u64>,
    },
    /// Which row and evidence would allow an exchange, or which rule refuses it.
    Explain {
        /// The agent asking (the actor).
        #[arg(long)]
        agent: String,
        /// The kind of subject token it presents.
        #[arg(long, value_enum)]
        subject_token_type: TokenTypeArg,
        /// The audience asked for (`https://…` or `agent:<id>`).
        #[arg(long)]
        audience: String,
        /// The scopes asked for (space-separated; absent: everything allowed).
        #[arg(long)]
        scope: Option<String>,
        /// The user, to take stored consent grants into account.
        #[arg(long)]
        subject: Option<String>,
        /// The hop of the token exchanged (needed for access_token).
        #[arg(long, value_name = "JTI")]
        parent_hop: Option<String>,
    },
}

/// A client kind.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    /// May act.
    #[value(name = "agent")]
    Agent,
    /// May introspect and follow revocations for its audiences.
    #[value(name = "resource_server")]
    ResourceServer,
}

/// A client state.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StateArg {
    /// Registered, not yet allowed to authenticate.
    Staged,
    /// Authenticates.
    Active,
    /// Stopped; can be activated again.
    Suspended,
    /// Stopped for good.
    Retired,
}

/// The state a new client starts in.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum InitialStateArg {
    /// Registered, not yet allowed to authenticate.
    Staged,
    /// Authenticates at once.
    Active,
}

/// A client authentication method.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AuthMethodArg {
    /// HTTP Basic with a generated secret.
    #[value(name = "client_secret_basic")]
    ClientSecretBasic,
    /// The generated secret in the form.
    #[value(name = "client_secret_post")]
    ClientSecretPost,
    /// A signed assertion (RFC 7523) with a key of its JWKS.
    #[value(name = "private_key_jwt")]
    PrivateKeyJwt,
}

/// A chain status.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ChainStatusArg {
    /// Some hop is live.
    Live,
    /// No hop is live and one was revoked.
    Revoked,
    /// Every hop expired.
    Expired,
}

/// `mandate participation …`.
#[derive(Subcommand, Debug)]
pub enum ParticipationCommand {
    /// Participation gates: what an app's verifiers must do before tokens are issued for it.
    Gates {
        #[command(subcommand)]
        command: GatesCommand,
    },
}

/// `mandate participation gates …`.
#[derive(Subcommand, Debug)]
pub enum GatesCommand {
    /// Every gate, with its audience's verdict now and whether it meets the gate.
    List,
    /// Sets an audience's gate (replacing its gate, if any).
    Set {
        /// The app audience (`https://…`).
        #[arg(long)]
        audience: String,
        /// What its verifiers must do.
        #[arg(long, value_enum)]
        require: RequireArg,
        /// Only audit what would be refused (`gates.would_refuse`), issuing anyway.
        #[arg(long)]
        dry_run: bool,
    },
    /// Removes an audience's gate.
    Remove {
        /// The app audience.
        #[arg(long)]
        audience: String,
    },
}

/// What a gate requires.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RequireArg {
    /// A live verifier follows revocations (or the app introspects).
    #[value(name = "follows_revocations")]
    FollowsRevocations,
    /// A live verifier checks tokens.
    #[value(name = "verifies")]
    Verifies,
    /// Nothing (the gate only shows the verdict).
    #[value(name = "none")]
    None,
}

/// A subject token type, as explain names it.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TokenTypeArg {
    /// An ID token from a trusted issuer.
    #[value(name = "id_token")]
    IdToken,
    /// A JWT from a trusted issuer.
    #[value(name = "jwt")]
    Jwt,
    /// A mandate access token (give --parent-hop).
    #[value(name = "access_token")]
    AccessToken,
    /// An ID-JAG.
    #[value(name = "id-jag")]
    IdJag,
}

/// The wire name of a value-enum argument (its clap name).
fn wire(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

/// Runs an admin command and reports: the exit code.
pub fn run(command: AdminCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(command)) {
        Ok(output) => {
            emit(&output);
            ExitCode::SUCCESS
        }
        Err(error) => {
            match &error {
                CliError::Refused {
                    status,
                    error,
                    message,
                } => eprintln!(
                    "error: the server refused ({status}): {}: {}",
                    table::clean(error),
                    table::clean(message)
                ),
                CliError::Findings(report) => {
                    emit(report);
                    eprintln!("error: {error}");
                }
                other => eprintln!("error: {other}"),
            }
            ExitCode::from(error.exit_code())
        }
    }
}

/// Writes to standard output; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// What a command prints: the JSON answer (with `--json`) or its rendering.
fn output(json: bool, body: &Value, human: impl FnOnce(&Value) -> String) -> String {
    if json {
        let text = serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string());
        let mut text = table::clean_json(&text);
        text.push('\n');
        text
    } else {
        human(body)
    }
}

fn connect(connection: &Connection) -> Result<AdminClient, CliError> {
    let credential = Credential::load(connection.credential_file.as_deref())?;
    AdminClient::new(&connection.url, &credential)
}

async fn execute(command: AdminCommand) -> Result<String, CliError> {
    match command {
        AdminCommand::Clients {
            connection,
            command,
        } => clients(&connection, command).await,
        AdminCommand::Chains {
            connection,
            command,
        } => chains(&connection, command).await,
        AdminCommand::Subjects {
            connection,
            command: SubjectsCommand::Authority { subject },
        } => {
            let client = connect(&connection)?;
            let answer = client
                .send(Request::get(&["subjects", subject.as_str(), "authority"]))
                .await?;
            Ok(output(
                connection.json,
                &answer.body,
                render::standing_authority,
            ))
        }
        AdminCommand::Revoke {
            connection,
            command,
        } => {
            let client = connect(&connection)?;
            let (segments, reason) = match &command {
                RevokeCommand::Hop { jti, reason } => (["hops", jti.as_str(), "revoke"], reason),
                RevokeCommand::Subject { subject, reason } => {
                    (["subjects", subject.as_str(), "revoke"], reason)
                }
            };
            let answer = client
                .send(Request::post(&segments).json(reason_body(reason.as_deref())))
                .await?;
            Ok(output(connection.json, &answer.body, render::outcome))
        }
        AdminCommand::Consents {
            connection,
            command,
        } => consents(&connection, command).await,
        AdminCommand::Policies {
            connection,
            command,
        } => policies(&connection, command).await,
        AdminCommand::Ssf {
            connection,
            command: SsfCommand::Streams,
        } => {
            let client = connect(&connection)?;
            let answer = client.send(Request::get(&["ssf", "streams"])).await?;
            Ok(output(connection.json, &answer.body, render::ssf_streams))
        }
        AdminCommand::Participation {
            connection,
            command: None,
        } => {
            let client = connect(&connection)?;
            let answer = client.send(Request::get(&["participation"])).await?;
            Ok(output(connection.json, &answer.body, render::participation))
        }
        AdminCommand::Participation {
            connection,
            command: Some(ParticipationCommand::Gates { command }),
        } => gates(&connection, command).await,
        AdminCommand::Apply { connection, args } => {
            let client = connect(&connection)?;
            apply::apply(&client, &args, connection.json).await
        }
        AdminCommand::Ledger {
            connection,
            command,
        } => ledger::ledger(&connection, command).await,
        AdminCommand::Audit {
            connection,
            limit,
            action,
            actor,
        } => {
            let client = connect(&connection)?;
            let answer = client
                .send(
                    Request::get(&["audit"])
                        .query("limit", limit)
                        .query("action", action)
                        .query("actor", actor),
                )
                .await?;
            Ok(output(connection.json, &answer.body, render::audit))
        }
    }
}

fn reason_body(reason: Option<&str>) -> Value {
    match reason {
        Some(reason) => json!({ "reason": reason }),
        None => json!({}),
    }
}

async fn clients(connection: &Connection, command: ClientsCommand) -> Result<String, CliError> {
    let client = connect(connection)?;
    let json = connection.json;
    match command {
        ClientsCommand::List { kind, state } => {
            let answer = client
                .send(
                    Request::get(&["agents"])
                        .query("kind", kind.map(wire))
                        .query("state", state.map(wire)),
                )
                .await?;
            Ok(output(json, &answer.body, render::agents))
        }
        ClientsCommand::Show { client_id } => {
            let answer = client.send(Request::get(&["agents", &client_id])).await?;
            Ok(output(json, &answer.body, render::agent))
        }
        ClientsCommand::Review {
            unused_days,
            expiring_days,
        } => {
            let answer = client
                .send(Request::get(&["agents"]).query("kind", Some("agent")))
                .await?;
            let limits = render::ReviewLimits {
                now: chrono::Utc::now(),
                unused: chrono::Duration::days(unused_days),
                expiring: chrono::Duration::days(expiring_days),
            };
            Ok(output(json, &answer.body, |body| {
                render::review(body, &limits)
            }))
        }
        ClientsCommand::Add(add) => {
            let body = add_body(&add)?;
            let answer = client.send(Request::post(&["agents"]).json(body)).await?;
            let has_secret = answer
                .body
                .get("client_secret")
                .is_some_and(Value::is_string);
            if has_secret {
                eprintln!(
                    "warning: store the client secret now, somewhere safe: it is shown only this \
                     once (mandate keeps only its hash)"
                );
            }
            Ok(output(json, &answer.body, render::added))
        }
        ClientsCommand::Update(update) => {
            let body = update_body(&update)?;
            let answer = client
                .send(Request::patch(&["agents", &update.client_id]).json(body))
                .await?;
            Ok(output(json, &answer.body, render::agent))
        }
        ClientsCommand::RotateSecret {
            client_id,
            overlap_secs,
        } => {
            let body = match overlap_secs {
                Some(secs) => json!({ "overlap_secs": secs }),
                None => json!({}),
            };
            let answer = client
                .send(Request::post(&["agents", &client_id, "secret"]).json(body))
                .await?;
            eprintln!(
                "warning: store the client secret now, somewhere safe: it is shown only this once \
                 (mandate keeps only its hash)"
            );
            Ok(output(json, &answer.body, render::rotated))
        }
        ClientsCommand::Suspend { client_id } => {
            transition(&client, json, &client_id, "suspend").await
        }
        ClientsCommand::Activate { client_id } => {
            transition(&client, json, &client_id, "activate").await
        }
        ClientsCommand::Retire { client_id } => {
            transition(&client, json, &client_id, "retire").await
        }
    }
}

async fn transition(
    client: &AdminClient,
    json: bool,
    client_id: &str,
    action: &str,
) -> Result<String, CliError> {
    let answer = client
        .send(Request::post(&["agents", client_id, action]))
        .await?;
    Ok(output(json, &answer.body, render::transitioned))
}

fn update_body(update: &UpdateClient) -> Result<Value, CliError> {
    let mut body = Map::new();
    if !update.owners.is_empty() {
        body.insert("owners".into(), json!(update.owners));
    }
    if let Some(description) = &update.description {
        body.insert("description".into(), json!(description));
    }
    if let Some(path) = &update.jwks_file {
        body.insert("jwks".into(), read_json(path)?);
    }
    if !update.audiences.is_empty() {
        body.insert("audiences".into(), json!(update.audiences));
    }
    if !update.upstreams.is_empty() {
        body.insert("upstream_ids".into(), upstream_ids(&update.upstreams)?);
    }
    if let Some(expires_at) = &update.expires_at {
        body.insert("expires_at".into(), json!(expires_at));
    }
    if update.no_expiry {
        body.insert("expires_at".into(), Value::Null);
    }
    if let Some(dpop) = update.dpop {
        body.insert("dpop".into(), json!(wire(dpop)));
    }
    if body.is_empty() {
        return Err(CliError::Usage(
            "nothing to change: give at least one of --owner, --description, --jwks-file, \
             --audience, --upstream, --expires-at, --no-expiry, --dpop"
                .into(),
        ));
    }
    Ok(Value::Object(body))
}

/// `ISSUER=CLIENT_ID` arguments as the API's `upstream_ids`.
fn upstream_ids(upstreams: &[String]) -> Result<Value, CliError> {
    let mut upstream_ids = Vec::new();
    for upstream in upstreams {
        let (issuer, client_id) = upstream
            .split_once('=')
            .filter(|(issuer, id)| !issuer.is_empty() && !id.is_empty())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--upstream {upstream:?}: expected ISSUER=CLIENT_ID"
                ))
            })?;
        upstream_ids.push(json!({ "issuer": issuer, "client_id": client_id }));
    }
    Ok(Value::Array(upstream_ids))
}

fn add_body(add: &AddClient) -> Result<Value, CliError> {
    let mut body = Map::new();
    body.insert("client_id".into(), json!(add.client_id));
    body.insert("kind".into(), json!(wire(add.kind)));
    body.insert("owners".into(), json!(add.owners));
    if let Some(description) = &add.description {
        body.insert("description".into(), json!(description));
    }
    body.insert("auth_method".into(), json!(wire(add.auth_method)));
    if let Some(state) = add.state {
        body.insert("state".into(), json!(wire(state)));
    }
    if let Some(expires_at) = &add.expires_at {
        body.insert("expires_at".into(), json!(expires_at));
    }
    if let Some(path) = &add.jwks_file {
        body.insert("jwks".into(), read_json(path)?);
    }
    if !add.audiences.is_empty() {
        body.insert("audiences".into(), json!(add.audiences));
    }
    if !add.upstreams.is_empty() {
        body.insert("upstream_ids".into(), upstream_ids(&add.upstreams)?);
    }
    Ok(Value::Object(body))
}

/// Files a command reads are small JSON documents.
const MAX_INPUT_BYTES: u64 = 4 * 1024 * 1024;

fn read_json(path: &Path) -> Result<Value, CliError> {
    let shown = path.display();
    let too_big = std::fs::metadata(path)
        .map(|m| m.len() > MAX_INPUT_BYTES)
        .unwrap_or(false);
    if too_big {
        return Err(CliError::Usage(format!(
            "{shown} is larger than {MAX_INPUT_BYTES} bytes"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {shown}: {e}")))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{shown} is not valid JSON: {e}")))
}

async fn chains(connection: &Connection, command: ChainsCommand) -> Result<String, CliError> {
    let client = connect(connection)?;
    let json = connection.json;
    match command {
        ChainsCommand::List {
            subject,
            agent,
            audience,
            status,
            since,
            until,
            limit,
            cursor,
        } => {
            let answer = client
                .send(
                    Request::get(&["chains"])
                        .query("subject", subject)
                        .query("agent", agent)
                        .query("audience", audience)
                        .query("status", status.map(wire))
                        .query("since", since)
                        .query("until", until)
                        .query("limit", limit)
                        .query("cursor", cursor),
                )
                .await?;
            Ok(output(json, &answer.body, render::chains))
        }
        ChainsCommand::Show { chain_id } => {
            let answer = client.send(Request::get(&["chains", &chain_id])).await?;
            Ok(output(json, &answer.body, render::chain_tree))
        }
        ChainsCommand::Revoke { chain_id, reason } => {
            let answer = client
                .send(
                    Request::post(&["chains", &chain_id, "revoke"])
                        .json(reason_body(reason.as_deref())),
                )
                .await?;
            Ok(output(json, &answer.body, render::outcome))
        }
    }
}

async fn consents(connection: &Connection, command: ConsentsCommand) -> Result<String, CliError> {
    let client = connect(connection)?;
    let json = connection.json;
    match command {
        ConsentsCommand::List { subject, actor } => {
            let answer = client
                .send(
                    Request::get(&["consents"])
                        .query("subject", subject)
                        .query("actor", actor),
                )
                .await?;
            Ok(output(json, &answer.body, render::consents))
        }
        ConsentsCommand::Add {
            subject,
            actor,
            audience,
            scopes,
            expires_at,
        } => {
            let scopes: Vec<&str> = scopes.iter().flat_map(|s| s.split_whitespace()).collect();
            let body = json!({
                "subject": subject,
                "actor": actor,
                "audience": audience,
                "scopes": scopes,
                "expires_at": expires_at,
            });
            let answer = client.send(Request::post(&["consents"]).json(body)).await?;
            Ok(output(json, &answer.body, render::consent_added))
        }
        ConsentsCommand::Withdraw { id } => {
            let answer = client.send(Request::delete(&["consents", &id])).await?;
            Ok(output(json, &answer.body, render::withdrawn))
        }
    }
}

async fn policies(connection: &Connection, command: PoliciesCommand) -> Result<String, CliError> {
    let client = connect(connection)?;
    let json = connection.json;
    match command {
        PoliciesCommand::Get => {
            let answer = client.send(Request::get(&["policies"])).await?;
            Ok(output(json, &answer.body, render::policies))
        }
        PoliciesCommand::Put { file, if_match } => {
            let document = read_json(&file)?;
            let (rows, file_version) = match &document {
                Value::Array(_) => (document.clone(), None),
                Value::Object(object) => match object.get("rows") {
                    Some(rows @ Value::Array(_)) => {
                        (rows.clone(), object.get("version").and_then(Value::as_u64))
                    }
                    _ => {
                        return Err(CliError::Usage(format!(
                            "{}: expected {{\"rows\": [...]}} or an array of rows",
                            file.display()
                        )))
                    }
                },
                _ => {
                    return Err(CliError::Usage(format!(
                        "{}: expected {{\"rows\": [...]}} or an array of rows",
                        file.display()
                    )))
                }
            };
            let version = match if_match.or(file_version) {
                Some(version) => version,
                None => current_policy_version(&client).await?,
            };
            let answer = client
                .send(
                    Request::put(&["policies"])
                        .header(IF_MATCH, format!("\"{version}\""))
                        .json(json!({ "rows": rows })),
                )
                .await?;
            Ok(output(json, &answer.body, render::policies))
        }
        PoliciesCommand::Explain {
            agent,
            subject_token_type,
            audience,
            scope,
            subject,
            parent_hop,
        } => {
            let mut body = Map::new();
            body.insert("agent".into(), json!(agent));
            body.insert("subject_token_type".into(), json!(wire(subject_token_type)));
            body.insert("audience".into(), json!(audience));
            for (name, value) in [
                ("scope", scope),
                ("subject", subject),
                ("parent_hop", parent_hop),
            ] {
                if let Some(value) = value {
                    body.insert(name.into(), json!(value));
                }
            }
            let answer = client
                .send(Request::post(&["policies", "explain"]).json(Value::Object(body)))
                .await?;
            Ok(output(json, &answer.body, render::explain))
        }
    }
}

async fn gates(connection: &Connection, command: GatesCommand) -> Result<String, CliError> {
    let client = connect(connection)?;
    let path = ["participation", "gates"];
    match command {
        GatesCommand::List => {
            let answer = client.send(Request::get(&path)).await?;
            Ok(output(connection.json, &answer.body, render::gates))
        }
        GatesCommand::Set {
            audience,
            require,
            dry_run,
        } => {
            let body = json!({"audience": audience, "require": wire(require), "dry_run": dry_run});
            let answer = client.send(Request::put(&path).json(body)).await?;
            Ok(output(connection.json, &answer.body, |body| {
                render::gates(&json!({ "gates": [body.get("gate")] }))
            }))
        }
        GatesCommand::Remove { audience } => {
            let answer = client
                .send(Request::delete(&path).query("audience", Some(&audience)))
                .await?;
            Ok(output(connection.json, &answer.body, |_| {
                format!("gate removed: {audience}\n")
            }))
        }
    }
}

/// The policy version, from `GET /admin/policies` (its `ETag`, else its `version`).
async fn current_policy_version(client: &AdminClient) -> Result<u64, CliError> {
    let answer = client.send(Request::get(&["policies"])).await?;
    let from_etag = answer
        .headers
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse().ok());
    from_etag
        .or_else(|| answer.body.get("version").and_then(Value::as_u64))
        .ok_or_else(|| {
            CliError::Unreachable("GET /admin/policies answered without a version".into())
        })
}
