//! Micro-benchmarks of the chain validator (docs/BENCHMARKS.md): deciding a root hop from an
//! upstream ID token, and a third hop from a hand-off (the decision that builds a 3-deep `act`).
//!
//! ```sh
//! cargo bench -p mandate-chain --bench validator
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark program"
)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mandate_chain::{
    decide, ChainId, Decision, ExchangeContext, ExchangeRequest, HopId, MandateSubject, Policy,
    PolicyRow, SubjectGrant, UpstreamSubject,
};
use mandate_model::{Audience, ClientId, IssuerAlias, ScopeSet, Subject};

const CAL: &str = "https://calendar.example.com";

fn row(actor: &str, audience: &str, scopes: &str) -> PolicyRow {
    PolicyRow {
        actor: ClientId::parse(actor).unwrap(),
        audience: Audience::parse(audience).unwrap(),
        scopes: ScopeSet::parse(scopes).unwrap(),
        max_depth: None,
    }
}

fn policy() -> Policy {
    // A few dozen rows, as a small deployment has, with the ones used below among them.
    let mut rows = vec![
        row("assistant", CAL, "cal.read cal.write"),
        row("assistant", "agent:booking", "cal.read cal.write"),
        row("booking", CAL, "cal.read cal.write"),
        row("booking", "agent:helper", "cal.read"),
        row("helper", CAL, "cal.read"),
    ];
    for i in 0..40 {
        rows.push(row(
            &format!("agent-{i}"),
            &format!("https://app{i}.example.com"),
            "a.read a.write",
        ));
    }
    Policy::new(rows)
}

fn context(hop: &str) -> ExchangeContext<'static> {
    ExchangeContext {
        issuer: "https://mandate.example.com",
        now: 1_800_000_000,
        ttl_secs: 300,
        max_chain_depth: 5,
        new_hop_id: HopId(hop.into()),
        root_chain_id: ChainId("chn_bench".into()),
    }
}

fn root(policy: &Policy, actor: &str, target: &str) -> Decision {
    let alias = IssuerAlias::parse("corp").unwrap();
    let actor = ClientId::parse(actor).unwrap();
    let target = Audience::parse(target).unwrap();
    let aud = vec![actor.to_string()];
    let subject = SubjectGrant::Upstream(UpstreamSubject {
        issuer: "https://corp.example.com",
        alias: &alias,
        subject: Subject::from_upstream(&alias, "alice", false).unwrap(),
        aud: &aud,
        azp: None,
        client_id: None,
        may_act: None,
        grant_id: "grant-1".into(),
        expires_at: 1_800_003_600,
        actor_upstream_ids: vec![actor.to_string()],
        consents: &[],
    });
    let request = ExchangeRequest {
        actor: &actor,
        target: &target,
        target_known: true,
        scope: None,
        details: None,
    };
    decide(policy, &request, &subject, &context("hop_root")).unwrap()
}

fn child(policy: &Policy, parent: &Decision, actor: &str, target: &str, hop: &str) -> Decision {
    let actor = ClientId::parse(actor).unwrap();
    let target = Audience::parse(target).unwrap();
    let subject = SubjectGrant::Mandate(MandateSubject {
        claims: &parent.claims,
        hop: Some(&parent.hop),
    });
    let request = ExchangeRequest {
        actor: &actor,
        target: &target,
        target_known: true,
        scope: None,
        details: None,
    };
    decide(policy, &request, &subject, &context(hop)).unwrap()
}

fn validator(c: &mut Criterion) {
    let policy = policy();
    c.bench_function("decide root hop (ID token -> app)", |b| {
        b.iter(|| root(black_box(&policy), "assistant", CAL))
    });
    let first = root(&policy, "assistant", "agent:booking");
    let second = child(&policy, &first, "booking", "agent:helper", "hop_2");
    c.bench_function("decide third hop (hand-off -> app, 3-deep act)", |b| {
        b.iter(|| child(black_box(&policy), &second, "helper", CAL, "hop_3"))
    });
}

criterion_group!(benches, validator);
criterion_main!(benches);
