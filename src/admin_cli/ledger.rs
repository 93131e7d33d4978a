//! `mandate ledger export|verify` (docs/CLI.md, docs/EVIDENCE.md): the journal streamed out of
//! the admin API to a file or standard output, and verified — online by the server against its
//! store, or offline from an export file, in bounded memory, with the checkpoints' signatures
//! checked against a JWKS file.

use std::io::{BufRead as _, BufReader, Write};
use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use mandate_journal::{verify_export, CheckpointKeys, ExportReport};
use mandate_token::{Algorithm, VerifyingKeySet};
use serde_json::Value;

use super::client::{AdminClient, Request};
use super::{connect, CliError, Connection};

/// `mandate ledger …`.
#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Stream the journal's entries (hops, revocations, admin and consent changes, refused
    /// exchanges) with their hashes and signed checkpoints, as JSON lines; never held whole in
    /// memory.
    Export {
        /// From the first entry written at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Up to the first entry written after this instant (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Only this chain's hops, and audit events whose target is it.
        #[arg(long)]
        chain: Option<String>,
        /// Only this subject's hops, and audit events whose target is it.
        #[arg(long)]
        subject: Option<String>,
        /// `jsonl`: the export format, verifiable offline; `ocsf`: OCSF 1.8.0 events for a SIEM.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormatArg,
        /// Write to FILE instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Verify the journal and name every altered, removed, reordered or rewritten entry. Without
    /// --file the server verifies its store; with --file, an export is verified here, offline.
    /// Exit code 4 when anything is found.
    Verify {
        /// An export (`ledger export --format jsonl`) to verify offline.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// mandate's JWKS (a file saved from its `jwks_uri`), to check the checkpoints'
        /// signatures offline; without it the checkpoints are not used.
        #[arg(long, value_name = "FILE", requires = "file")]
        jwks: Option<PathBuf>,
    },
}

/// `--format`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormatArg {
    /// The export format.
    Jsonl,
    /// OCSF 1.8.0 events.
    Ocsf,
}

/// How long one export may stream: far longer than one admin request.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 3_600);

pub(super) async fn ledger(
    connection: &Connection,
    command: LedgerCommand,
) -> Result<String, CliError> {
    match command {
        LedgerCommand::Export {
            since,
            until,
            chain,
            subject,
            format,
            output,
        } => {
            let client = connect(connection)?;
            let request = Request::get(&["ledger", "export"])
                .query("since", since)
                .query("until", until)
                .query("chain", chain)
                .query("subject", subject)
                .query("format", Some(super::wire(format)));
            let lines = match &output {
                Some(path) => {
                    let mut file = std::fs::File::create(path).map_err(|e| {
                        CliError::Usage(format!("cannot write {}: {e}", path.display()))
                    })?;
                    stream(&client, request, &mut file).await?
                }
                None => stream(&client, request, &mut std::io::stdout().lock()).await?,
            };
            Ok(match output {
                Some(path) => format!("{lines} lines written to {}\n", path.display()),
                None => String::new(),
            })
        }
        LedgerCommand::Verify { file: None, .. } => {
            let client = connect(connection)?;
            let answer = client.send(Request::get(&["ledger", "verify"])).await?;
            let text = super::output(connection.json, &answer.body, online_report);
            if answer.body["clean"] == Value::Bool(true) {
                Ok(text)
            } else {
                Err(CliError::Findings(text))
            }
        }
        LedgerCommand::Verify {
            file: Some(file),
            jwks,
        } => {
            let keys = jwks
                .map(|path| {
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        CliError::Usage(format!("cannot read {}: {e}", path.display()))
                    })?;
                    VerifyingKeySet::from_jwks_json(&text, &Algorithm::ALL).map_err(|e| {
                        CliError::Usage(format!("{} is not a JWKS: {e}", path.display()))
                    })
                })
                .transpose()?;
            let reader = std::fs::File::open(&file)
                .map(BufReader::new)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let report = verify_export(
                reader.lines(),
                keys.as_ref().map(|keys| CheckpointKeys {
                    keys,
                    algorithms: &Algorithm::ALL,
                }),
            )
            .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
            let body = serde_json::to_value(&report).unwrap_or(Value::Null);
            let text = super::output(connection.json, &body, |_| offline_report(&report));
            if report.is_clean() {
                Ok(text)
            } else {
                Err(CliError::Findings(text))
            }
        }
    }
}

/// Copies the answer's body to `out` as it arrives; how many lines.
async fn stream(
    client: &AdminClient,
    request: Request<'_>,
    out: &mut dyn Write,
) -> Result<u64, CliError> {
    let mut response = client.open(request, EXPORT_TIMEOUT).await?;
    let mut lines = 0;
    let write_error = |e: std::io::Error| CliError::Usage(format!("cannot write the export: {e}"));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| CliError::Unreachable(format!("the export was cut short: {e}")))?
    {
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        out.write_all(&chunk).map_err(write_error)?;
    }
    out.flush().map_err(write_error)?;
    Ok(lines)
}

fn counts(report: &Value) -> String {
    let number = |key: &str| report[key].as_u64().unwrap_or(0);
    match (report["first"].as_u64(), report["last"].as_u64()) {
        (Some(first), Some(last)) => format!(
            "{} entries (seq {first} to {last}), {} checkpoints checked",
            number("entries"),
            number("checkpoints_checked")
        ),
        _ => format!("{} entries", number("entries")),
    }
}

fn online_report(report: &Value) -> String {
    let mut text = format!("journal in the store: {}\n", counts(report));
    for message in report["messages"].as_array().into_iter().flatten() {
        text.push_str(&format!("  {}\n", message.as_str().unwrap_or_default()));
    }
    for seq in report["checkpoints_refused"]
        .as_array()
        .into_iter()
        .flatten()
    {
        text.push_str(&format!(
            "  the checkpoint at {seq} does not verify against mandate's keys\n"
        ));
    }
    text.push_str(if report["clean"] == Value::Bool(true) {
        "clean: nothing altered, removed or reordered\n"
    } else {
        "NOT CLEAN\n"
    });
    text
}

fn offline_report(report: &ExportReport) -> String {
    let body = serde_json::to_value(report).unwrap_or(Value::Null);
    let mut text = format!("export: {}\n", counts(&body));
    for finding in &report.report.findings {
        text.push_str(&format!("  {finding}\n"));
    }
    if report.report.findings_dropped > 0 {
        text.push_str(&format!(
            "  and {} findings more\n",
            report.report.findings_dropped
        ));
    }
    for seq in &report.checkpoints_refused {
        text.push_str(&format!(
            "  the checkpoint at {seq} does not verify against the JWKS\n"
        ));
    }
    if !report.signatures_checked {
        text.push_str("  checkpoints not used: no --jwks to check their signatures with\n");
    }
    if !report.complete {
        text.push_str("  the export is incomplete: its last line is missing or miscounts\n");
    }
    text.push_str(if report.is_clean() {
        "clean: nothing altered, removed or reordered\n"
    } else {
        "NOT CLEAN\n"
    });
    text
}
