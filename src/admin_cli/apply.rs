//! `mandate apply --config FILE [--dry-run] [--prune]`: makes a running deployment hold the
//! clients, policy rows and consent grants its configuration file names, through the admin API,
//! and prints the difference first, so that the file can live in git and be applied by a
//! pipeline.
//!
//! The file is read and checked exactly as `mandate serve` reads it. What differs is found by the
//! server where only it can tell (a client's fields are sent as a dry-run PATCH, which answers the
//! fields whose values differ, the secret's hash among them), and here for the policy and the
//! grants, whose stored forms the API shows. Without `--prune` nothing the file does not name is
//! touched; with it, clients it does not name are retired, policy rows it does not name dropped
//! and grants it does not name withdrawn. Applying the same file twice changes nothing the second
//! time. Lifecycle states are not applied to existing clients: a suspension is an incident
//! response, and a pipeline re-applying the file must not undo it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Args;
use mandate_chain::{Policy, PolicyRow};
use mandate_model::{Audience, ClientId, ScopeSet};
use mandate_server::config::{ClientSettings, ConsentSettings, ValidatedSettings};
use mandate_server::{ConfigSource, Settings};
use serde_json::{json, Value};

use super::client::{AdminClient, Request};
use super::{current_policy_version, CliError};
use reqwest::header::IF_MATCH;

/// `mandate apply`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The configuration file, read and checked as `mandate serve` reads it; its
    /// [[clients]], [[policies]] and [[consents]] are applied.
    #[arg(long)]
    pub config: PathBuf,
    /// Print the changes and make none.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove what the file does not name: retire clients (every live token they appear
    /// in dies), drop policy rows, withdraw consent grants (the chains rooted on them die).
    #[arg(long)]
    pub prune: bool,
}

/// One change the file asks for.
#[derive(Debug)]
enum Change {
    AddClient {
        id: String,
        body: Value,
        summary: String,
    },
    UpdateClient {
        id: String,
        body: Value,
        changed: Vec<String>,
    },
    RetireClient {
        id: String,
    },
    ReplacePolicy {
        rows: Vec<Value>,
        lines: Vec<String>,
    },
    AddConsent {
        id: String,
        body: Value,
        summary: String,
    },
    WithdrawConsent {
        id: String,
        summary: String,
    },
}

impl Change {
    fn sign(&self) -> char {
        match self {
            Change::AddClient { .. } | Change::AddConsent { .. } => '+',
            Change::UpdateClient { .. } | Change::ReplacePolicy { .. } => '~',
            Change::RetireClient { .. } | Change::WithdrawConsent { .. } => '-',
        }
    }

    fn render(&self) -> String {
        match self {
            Change::AddClient { id, summary, .. } => format!("+ client {id} ({summary})\n"),
            Change::UpdateClient { id, changed, .. } => {
                format!("~ client {id}: {}\n", changed.join(", "))
            }
            Change::RetireClient { id } => {
                format!("- client {id} (retired: every live token it appears in dies)\n")
            }
            Change::ReplacePolicy { lines, .. } => {
                let mut text = String::from("~ policies\n");
                for line in lines {
                    text.push_str(&format!("    {line}\n"));
                }
                text
            }
            Change::AddConsent { id, summary, .. } => format!("+ consent {id} ({summary})\n"),
            Change::WithdrawConsent { id, summary } => {
                format!("- consent {id} ({summary}; withdrawn: the chains rooted on it die)\n")
            }
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Change::AddClient { id, .. } => json!({"op": "add", "kind": "client", "id": id}),
            Change::UpdateClient { id, changed, .. } => {
                json!({"op": "change", "kind": "client", "id": id, "fields": changed})
            }
            Change::RetireClient { id } => json!({"op": "remove", "kind": "client", "id": id}),
            Change::ReplacePolicy { lines, .. } => {
                json!({"op": "change", "kind": "policies", "rows": lines})
            }
            Change::AddConsent { id, .. } => json!({"op": "add", "kind": "consent", "id": id}),
            Change::WithdrawConsent { id, .. } => {
                json!({"op": "remove", "kind": "consent", "id": id})
            }
        }
    }
}

/// Something the plan says but does not do: a conflict stops the apply, a note does not.
#[derive(Debug, PartialEq, Eq)]
enum Remark {
    Conflict(String),
    Note(String),
}

/// The changes and remarks, in the order they are made.
#[derive(Debug, Default)]
struct Plan {
    changes: Vec<Change>,
    remarks: Vec<Remark>,
}

impl Plan {
    fn conflicts(&self) -> usize {
        self.remarks
            .iter()
            .filter(|r| matches!(r, Remark::Conflict(_)))
            .count()
    }

    fn render(&self, dry_run: bool, applied: bool) -> String {
        let mut text = String::new();
        for change in &self.changes {
            text.push_str(&change.render());
        }
        for remark in &self.remarks {
            match remark {
                Remark::Conflict(message) => text.push_str(&format!("! {message}\n")),
                Remark::Note(message) => text.push_str(&format!("· {message}\n")),
            }
        }
        let count = |sign| self.changes.iter().filter(|c| c.sign() == sign).count();
        if self.changes.is_empty() {
            text.push_str("no changes\n");
        } else {
            text.push_str(&format!(
                "{} to add, {} to change, {} to remove\n",
                count('+'),
                count('~'),
                count('-')
            ));
        }
        if self.conflicts() > 0 {
            text.push_str("nothing was changed: resolve the conflicts (!) first\n");
        } else if dry_run && !self.changes.is_empty() {
            text.push_str("dry run: nothing was changed\n");
        } else if applied && !self.changes.is_empty() {
            text.push_str("applied\n");
        }
        text
    }

    fn to_json(&self, dry_run: bool, applied: bool) -> Value {
        let remarks: Vec<Value> = self
            .remarks
            .iter()
            .map(|r| match r {
                Remark::Conflict(m) => json!({"conflict": m}),
                Remark::Note(m) => json!({"note": m}),
            })
            .collect();
        json!({
            "dry_run": dry_run,
            "applied": applied,
            "changes": self.changes.iter().map(Change::to_json).collect::<Vec<_>>(),
            "remarks": remarks,
        })
    }
}

/// Reads the file as `mandate serve` would, with every check it runs.
fn read_file(path: &Path) -> Result<ValidatedSettings, CliError> {
    let settings = Settings::load(path).map_err(|e| CliError::Usage(e.to_string()))?;
    ValidatedSettings::try_from((settings, ConfigSource::File(path.to_owned())))
        .map_err(|e| CliError::Usage(e.to_string()))
}

/// What the admin API takes for a client in the file, for registration (`full`) or as a PATCH
/// (the fields that may change).
fn client_body(client: &ClientSettings, full: bool) -> Result<Value, CliError> {
    let jwks = match (&client.jwks_file, &client.jwks) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::Usage(format!(
                    "clients '{}': jwks_file {}: {e}",
                    client.client_id,
                    path.display()
                ))
            })?;
            Some(serde_json::from_str::<Value>(&text).map_err(|e| {
                CliError::Usage(format!(
                    "clients '{}': jwks_file {}: not JSON: {e}",
                    client.client_id,
                    path.display()
                ))
            })?)
        }
        (None, jwks) => jwks.clone(),
    };
    let mut body = json!({
        "owners": client.owners,
        "description": client.description,
        "upstream_ids": client.upstream_ids,
        "audiences": client.audiences,
        "dpop": client.dpop,
        "expires_at": client.expires_at,
    });
    if let Some(jwks) = jwks {
        body["jwks"] = jwks;
    }
    if let Some(hash) = &client.secret_hash {
        body["secret_hash"] = json!(hash.to_string());
    }
    if full {
        body["client_id"] = json!(client.client_id);
        body["kind"] = json!(client.kind);
        body["auth_method"] = json!(client.auth_method);
        body["state"] = json!(client.state);
        if client.expires_at.is_none() {
            body.as_object_mut().map(|o| o.remove("expires_at"));
        }
    }
    Ok(body)
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The strings of the array at `key` (none when it is absent or not an array).
fn strings(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// `GET /admin/<collection>`'s items, by their `id_field`.
async fn listed(
    client: &AdminClient,
    collection: &str,
    id_field: &str,
) -> Result<BTreeMap<String, Value>, CliError> {
    let answer = client.send(Request::get(&[collection])).await?;
    Ok(answer
        .body
        .get(collection)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|item| (text(item, id_field).to_owned(), item.clone()))
        .collect())
}

async fn plan_clients(
    client: &AdminClient,
    file: &ValidatedSettings,
    prune: bool,
    plan: &mut Plan,
) -> Result<(), CliError> {
    let stored = listed(client, "agents", "client_id").await?;
    let mut named = BTreeSet::new();
    for settings in &file.clients {
        let id = settings.client_id.to_string();
        named.insert(id.clone());
        let Some(current) = stored.get(&id) else {
            let state = settings.state.to_string();
            if !matches!(state.as_str(), "staged" | "active") {
                plan.remarks.push(Remark::Conflict(format!(
                    "client {id}: a new client is registered staged or active, not {state}"
                )));
                continue;
            }
            let summary = format!("{}, {}, {state}", settings.kind, settings.auth_method);
            plan.changes.push(Change::AddClient {
                id,
                body: client_body(settings, true)?,
                summary,
            });
            continue;
        };
        let mut fixed = Vec::new();
        for (field, wanted) in [
            ("kind", settings.kind.to_string()),
            ("auth_method", settings.auth_method.to_string()),
        ] {
            let stored = text(current, field);
            if stored != wanted {
                fixed.push(format!("{field} (stored {stored}, file {wanted})"));
            }
        }
        if !fixed.is_empty() {
            plan.remarks.push(Remark::Conflict(format!(
                "client {id}: {} differ; they never change: retire it and register a new client",
                fixed.join(", ")
            )));
            continue;
        }
        let (stored_state, wanted_state) = (text(current, "state"), settings.state.to_string());
        if stored_state != wanted_state {
            plan.remarks.push(Remark::Note(format!(
                "client {id}: stored {stored_state}, file {wanted_state}; apply does not change \
                 lifecycle states (mandate clients activate|suspend|retire {id})"
            )));
        }
        if stored_state == "retired" {
            continue;
        }
        let body = client_body(settings, false)?;
        let answer = client
            .send(
                Request::patch(&["agents", &id])
                    .query("dry_run", Some(true))
                    .json(body.clone()),
            )
            .await?;
        let changed = strings(&answer.body, "changed");
        if !changed.is_empty() {
            plan.changes
                .push(Change::UpdateClient { id, body, changed });
        }
    }
    if prune {
        for (id, agent) in &stored {
            if !named.contains(id) && text(agent, "state") != "retired" {
                plan.changes.push(Change::RetireClient { id: id.clone() });
            }
        }
    }
    Ok(())
}

fn row_of(value: &Value) -> Result<PolicyRow, CliError> {
    let bad = |e: String| CliError::Unreachable(format!("the server's policy row {value}: {e}"));
    let scopes = strings(value, "scopes");
    Ok(PolicyRow {
        actor: ClientId::parse(text(value, "actor")).map_err(|e| bad(e.to_string()))?,
        audience: Audience::parse(text(value, "audience")).map_err(|e| bad(e.to_string()))?,
        scopes: ScopeSet::from_tokens(&scopes).map_err(|e| bad(e.to_string()))?,
        max_depth: value
            .get("max_depth")
            .and_then(Value::as_u64)
            .and_then(|d| u32::try_from(d).ok()),
    })
}

fn row_json(row: &PolicyRow) -> Value {
    let mut value = json!({
        "actor": row.actor,
        "audience": row.audience,
        "scopes": row.scopes.iter().collect::<Vec<_>>(),
    });
    if let Some(depth) = row.max_depth {
        value["max_depth"] = json!(depth);
    }
    value
}

fn row_text(row: &PolicyRow) -> String {
    let depth = row
        .max_depth
        .map(|d| format!(" (max depth {d})"))
        .unwrap_or_default();
    format!("{} → {}: {}{depth}", row.actor, row.audience, row.scopes)
}

/// The policy the deployment should hold, and what changes from `stored`: the file's rows, and
/// (without prune) the stored rows for an actor and audience the file does not name. Pure.
fn plan_policy(stored: &[PolicyRow], file: &[PolicyRow], prune: bool) -> Option<Change> {
    let key = |row: &PolicyRow| (row.actor.to_string(), row.audience.to_string());
    let file = Policy::new(file.to_vec());
    let named: BTreeSet<_> = file.rows().iter().map(key).collect();
    let mut wanted: Vec<PolicyRow> = file.rows().to_vec();
    if !prune {
        wanted.extend(
            stored
                .iter()
                .filter(|row| !named.contains(&key(row)))
                .cloned(),
        );
    }
    let wanted = Policy::new(wanted);
    let stored = Policy::new(stored.to_vec());
    // By agent and audience, so that the order of the rows is no difference.
    let before: BTreeMap<_, _> = stored.rows().iter().map(|r| (key(r), r)).collect();
    let after: BTreeMap<_, _> = wanted.rows().iter().map(|r| (key(r), r)).collect();
    if before == after {
        return None;
    }
    let mut lines = Vec::new();
    for (k, row) in &after {
        match before.get(k) {
            None => lines.push(format!("+ {}", row_text(row))),
            Some(old) if old != row => {
                lines.push(format!("~ {} (was {})", row_text(row), row_text(old)));
            }
            Some(_) => {}
        }
    }
    for (k, row) in &before {
        if !after.contains_key(k) {
            lines.push(format!("- {}", row_text(row)));
        }
    }
    Some(Change::ReplacePolicy {
        rows: wanted.rows().iter().map(row_json).collect(),
        lines,
    })
}

fn consent_summary(subject: &str, actor: &str, audience: &str, scopes: &str) -> String {
    format!("{subject} lets {actor} use {audience}: {scopes}")
}

async fn plan_consents(
    client: &AdminClient,
    file: &[ConsentSettings],
    prune: bool,
    plan: &mut Plan,
) -> Result<(), CliError> {
    // Agents this plan registers: the server cannot check a grant for them before they exist
    // (and no grant of theirs can have been withdrawn).
    let new_agents: BTreeSet<String> = plan
        .changes
        .iter()
        .filter_map(|change| match change {
            Change::AddClient { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    let stored = listed(client, "consents", "id").await?;
    let now = chrono::Utc::now();
    let mut named = BTreeSet::new();
    for consent in file {
        let id = mandate_core::content_id(
            &consent.subject,
            &consent.actor,
            &consent.audience,
            &consent.scopes,
        );
        named.insert(id.clone());
        let summary = consent_summary(
            &consent.subject.to_string(),
            &consent.actor.to_string(),
            &consent.audience.to_string(),
            &consent.scopes.to_string(),
        );
        let expires_at = consent.expires_at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        match stored.get(&id) {
            Some(grant) => {
                if text(grant, "expires_at") != expires_at {
                    plan.remarks.push(Remark::Note(format!(
                        "consent {id}: stored until {}, file until {expires_at}; a grant never \
                         changes: withdraw it (mandate consents withdraw {id}) and apply again",
                        text(grant, "expires_at")
                    )));
                }
            }
            None if consent.expires_at <= now => plan.remarks.push(Remark::Note(format!(
                "consent {id} ({summary}): expired at {expires_at}; not created"
            ))),
            None => {
                let body = json!({
                    "id": id,
                    "subject": consent.subject,
                    "actor": consent.actor,
                    "audience": consent.audience,
                    "scopes": consent.scopes.iter().collect::<Vec<_>>(),
                    "expires_at": expires_at,
                });
                // The server knows what the list cannot show: a grant an admin withdrew.
                let asked = if new_agents.contains(consent.actor.as_str()) {
                    Ok(())
                } else {
                    client
                        .send(
                            Request::post(&["consents"])
                                .query("dry_run", Some(true))
                                .json(body.clone()),
                        )
                        .await
                        .map(drop)
                };
                match asked {
                    Ok(_) => plan.changes.push(Change::AddConsent {
                        body,
                        id,
                        summary: format!("{summary}, until {expires_at}"),
                    }),
                    Err(CliError::Refused { error, .. }) if error == "withdrawn" => {
                        plan.remarks.push(Remark::Note(format!(
                            "consent {id} ({summary}): withdrawn by an admin; not created again \
                             (it stays withdrawn until it would have expired)"
                        )));
                    }
                    Err(error) => return Err(error),
                }
            }
        }
    }
    if prune {
        for (id, grant) in &stored {
            if !named.contains(id) {
                let scopes = strings(grant, "scopes");
                plan.changes.push(Change::WithdrawConsent {
                    id: id.clone(),
                    summary: consent_summary(
                        text(grant, "subject"),
                        text(grant, "actor"),
                        text(grant, "audience"),
                        &scopes.join(" "),
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Plans, prints and (unless a dry run, or a conflict) applies. The text to print.
pub async fn apply(client: &AdminClient, args: &ApplyArgs, json: bool) -> Result<String, CliError> {
    let file = read_file(&args.config)?;
    let mut plan = Plan::default();
    plan_clients(client, &file, args.prune, &mut plan).await?;
    let answer = client.send(Request::get(&["policies"])).await?;
    let stored_rows = answer
        .body
        .get("rows")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(row_of)
        .collect::<Result<Vec<_>, _>>()?;
    // A file without rows leaves the policy alone, unless pruning (then it empties it).
    if !file.policy_rows().is_empty() || args.prune {
        if let Some(change) = plan_policy(&stored_rows, file.policy_rows(), args.prune) {
            plan.changes.push(change);
        }
    }
    plan_consents(client, &file.consents, args.prune, &mut plan).await?;
    // Registrations first (the policy and the grants may name new agents), retirements last.
    plan.changes.sort_by_key(|change| match change {
        Change::AddClient { .. } => 0,
        Change::UpdateClient { .. } => 1,
        Change::ReplacePolicy { .. } => 2,
        Change::AddConsent { .. } => 3,
        Change::WithdrawConsent { .. } => 4,
        Change::RetireClient { .. } => 5,
    });

    let conflicts = plan.conflicts();
    let applying = !args.dry_run && conflicts == 0;
    if applying {
        for change in &plan.changes {
            make(client, change).await?;
        }
    }
    let text = if json {
        let mut text =
            serde_json::to_string_pretty(&plan.to_json(args.dry_run, applying)).unwrap_or_default();
        text.push('\n');
        text
    } else {
        plan.render(args.dry_run, applying)
    };
    if conflicts > 0 {
        super::emit(&text);
        return Err(CliError::Refused {
            status: 409,
            error: "conflict".into(),
            message: format!("{conflicts} conflict(s) between the file and the deployment"),
        });
    }
    Ok(text)
}

async fn make(client: &AdminClient, change: &Change) -> Result<(), CliError> {
    match change {
        Change::AddClient { body, .. } => {
            client
                .send(Request::post(&["agents"]).json(body.clone()))
                .await?;
        }
        Change::UpdateClient { id, body, .. } => {
            client
                .send(Request::patch(&["agents", id]).json(body.clone()))
                .await?;
        }
        Change::RetireClient { id } => {
            client
                .send(
                    Request::post(&["agents", id, "retire"])
                        .json(json!({"reason": "not in the applied configuration"})),
                )
                .await?;
        }
        Change::ReplacePolicy { rows, .. } => {
            let version = current_policy_version(client).await?;
            client
                .send(
                    Request::put(&["policies"])
                        .header(IF_MATCH, format!("\"{version}\""))
                        .json(json!({ "rows": rows })),
                )
                .await?;
        }
        Change::AddConsent { body, .. } => {
            client
                .send(Request::post(&["consents"]).json(body.clone()))
                .await?;
        }
        Change::WithdrawConsent { id, .. } => {
            client.send(Request::delete(&["consents", id])).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn row(actor: &str, audience: &str, scopes: &str) -> PolicyRow {
        PolicyRow {
            actor: ClientId::parse(actor).unwrap(),
            audience: Audience::parse(audience).unwrap(),
            scopes: ScopeSet::parse(scopes).unwrap(),
            max_depth: None,
        }
    }

    const APP: &str = "https://app.example.com";
    const OTHER: &str = "https://other.example.com";

    #[test]
    fn the_same_rows_are_no_change_in_any_order() {
        let stored = [row("a", APP, "read write"), row("b", OTHER, "read")];
        let file = [row("b", OTHER, "read"), row("a", APP, "write read")];
        assert!(plan_policy(&stored, &file, false).is_none());
        assert!(plan_policy(&stored, &file, true).is_none());
    }

    #[test]
    fn without_prune_rows_the_file_does_not_name_stay() {
        let stored = [row("a", APP, "read"), row("b", OTHER, "read")];
        let file = [row("a", APP, "read write"), row("c", APP, "read")];
        let Some(Change::ReplacePolicy { rows, lines }) = plan_policy(&stored, &file, false) else {
            panic!("a change")
        };
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert!(rows.iter().any(|r| r["actor"] == "b"), "b stays: {rows:?}");
        assert_eq!(
            lines,
            [
                format!("~ a → {APP}: read write (was a → {APP}: read)"),
                format!("+ c → {APP}: read"),
            ]
        );
    }

    #[test]
    fn with_prune_the_policy_is_the_files() {
        let stored = [row("a", APP, "read"), row("b", OTHER, "read")];
        let file = [row("a", APP, "read")];
        let Some(Change::ReplacePolicy { rows, lines }) = plan_policy(&stored, &file, true) else {
            panic!("a change")
        };
        assert_eq!(rows, [row_json(&row("a", APP, "read"))]);
        assert_eq!(lines, [format!("- b → {OTHER}: read")]);
    }

    #[test]
    fn a_conflict_is_said_and_stops_everything() {
        let plan = Plan {
            changes: vec![Change::RetireClient { id: "x".into() }],
            remarks: vec![Remark::Conflict("client y: kind differs".into())],
        };
        let text = plan.render(false, false);
        assert!(text.contains("! client y: kind differs"), "{text}");
        assert!(text.contains("nothing was changed"), "{text}");
        assert!(!text.contains("applied"), "{text}");
    }
}
