//! `config/mandate.toml`, the operators' annotated reference, stays in sync with `config.rs`:
//! it parses (so it has no unknown keys and no values of the wrong type), its defaults are the
//! code's defaults, and every section is documented.

#![allow(clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use mandate_server::config::{AdminRole, StoreKind};
use mandate_server::Settings;

fn reference_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/mandate.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn reference_config_parses_and_lists_every_key() {
    let settings = Settings::from_toml(&reference_text())
        .unwrap_or_else(|e| panic!("config/mandate.toml does not parse: {e}"));
    let defaults = Settings::from_toml("").expect("empty configuration parses");

    // Scalar keys are at the code's defaults.
    assert_eq!(settings.issuer, defaults.issuer);
    assert_eq!(settings.listen, defaults.listen);
    assert_eq!(settings.admin_listen, defaults.admin_listen);
    assert_eq!(settings.store.kind, StoreKind::Memory);
    assert!(settings.store.url.is_none());
    assert_eq!(settings.signing.algorithm, defaults.signing.algorithm);
    assert!(settings.signing.key_file.is_none());
    assert!(settings.signing.next_key_file.is_none());
    assert!(settings.signing.retired_key_files.is_empty());

    assert_eq!(settings.tokens.access_token_ttl_secs, 300);
    assert_eq!(settings.tokens.id_jag_ttl_secs, 300);
    assert_eq!(settings.tokens.max_chain_depth, 5);
    assert_eq!(settings.tokens.clock_skew_secs, 60);
    assert_eq!(settings.tokens.ledger_retention_secs, 2_592_000);
    assert!(settings.tokens.chain_id_key_file.is_none());
    let (t, d) = (&settings.tokens, &defaults.tokens);
    assert_eq!(
        (
            t.access_token_ttl_secs,
            t.id_jag_ttl_secs,
            t.max_chain_depth
        ),
        (
            d.access_token_ttl_secs,
            d.id_jag_ttl_secs,
            d.max_chain_depth
        )
    );
    assert_eq!(
        (t.clock_skew_secs, t.ledger_retention_secs),
        (d.clock_skew_secs, d.ledger_retention_secs)
    );

    assert_eq!(settings.limits.token_requests_per_client_per_sec, 100);
    assert_eq!(settings.limits.max_body_bytes, 65_536);
    assert_eq!(settings.limits.max_header_bytes, 16_384);
    assert_eq!(settings.limits.request_timeout_secs, 10);
    assert_eq!(settings.limits.audit_stream_max, 1_000_000);
    let (l, d) = (&settings.limits, &defaults.limits);
    assert_eq!(
        (
            l.token_requests_per_client_per_sec,
            l.max_body_bytes,
            l.max_header_bytes,
            l.request_timeout_secs,
            l.audit_stream_max
        ),
        (
            d.token_requests_per_client_per_sec,
            d.max_body_bytes,
            d.max_header_bytes,
            d.request_timeout_secs,
            d.audit_stream_max
        )
    );

    // One example of each array of tables.
    assert_eq!(settings.admin.credentials.len(), 1);
    assert_eq!(settings.admin.credentials[0].role, AdminRole::Revoke);
    assert_eq!(settings.trusted_issuers.len(), 1);
    let issuer = &settings.trusted_issuers[0];
    assert_eq!(issuer.max_token_age_secs, 3600);
    assert!(!issuer.subject_as_is && !issuer.id_jag_reuse);
    assert!(settings.clients.len() >= 2);
    let agent = &settings.clients[0];
    assert_eq!(agent.upstream_ids.len(), 1);
    assert!(agent.expires_at.is_some());
    assert!(settings
        .clients
        .iter()
        .any(|c| !c.audiences.is_empty() && c.secret_hash.is_some()));
    assert!(settings
        .policies
        .iter()
        .any(|p| p.audience.agent().is_some()));
    assert_eq!(settings.consents.len(), 1);
    assert_eq!(settings.id_jag.resource_servers.len(), 1);
    assert!(defaults.participation_gates.is_empty());
    assert_eq!(settings.dpop.require_nonce, defaults.dpop.require_nonce);
    assert_eq!(
        settings.lifecycle.suspend_unused_agents_after_days,
        defaults.lifecycle.suspend_unused_agents_after_days
    );
    assert_eq!(settings.log.format, defaults.log.format);
    assert_eq!(settings.tls, defaults.tls);
    assert_eq!(settings.participation_gates.len(), 1);
    assert!(settings.participation_gates[0].dry_run);
}

#[test]
fn reference_config_documents_every_section() {
    let text = reference_text();
    for section in [
        "[store]",
        "[signing]",
        "[tokens]",
        "[limits]",
        "[lifecycle]",
        "[dpop]",
        "[log]",
        "[tls]",
        "[[admin.credentials]]",
        "[[trusted_issuers]]",
        "[[clients]]",
        "[[policies]]",
        "[[consents]]",
        "[[id_jag.resource_servers]]",
        "[[participation_gates]]",
    ] {
        let as_header = text
            .lines()
            .any(|line| line.trim_start().starts_with(section));
        assert!(as_header, "config/mandate.toml has no {section} section");
    }
}
