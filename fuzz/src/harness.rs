//! The fuzz harnesses, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and the
//! workspace test that replays the seed corpus
//! (`crates/mandate-server/tests/api/attacks.rs`, which `#[path]`-includes this file), so that
//! the harness code is compiled and run by CI even though cargo-fuzz is not.
//!
//! Each function takes arbitrary bytes and must neither panic nor break the invariant it states;
//! an `assert!` that fails is a finding.

use mandate_chain::{
    decide, Authority, ChainId, ConsentGrant, Decision, EvidenceKind, ExchangeContext,
    ExchangeRequest, HopId, HopRecord, MandateSubject, Policy, PolicyRow, SubjectGrant,
    UpstreamSubject,
};
use mandate_model::{Audience, ClientId, IssuerAlias, ScopeSet, Subject};
use mandate_server::form::Form;
use mandate_token::{
    thumbprint, AccessTokenClaims, Act, Algorithm, IdJagClaims, UnverifiedJws, UpstreamClaims,
    VerifyingKeySet,
};
use serde_json::Value;

/// A harness: arbitrary bytes in, a panic on a finding.
pub type Harness = fn(&[u8]);

/// The targets, by name: what the corpus directories are called.
pub const TARGETS: [(&str, Harness); 5] = [
    ("form", form),
    ("jws", jws),
    ("claims", claims),
    ("jwks", jwks),
    ("chain", chain),
];

/// `Form::parse` (the token, introspection and revocation endpoints' body parser): never panics;
/// accepts exactly the UTF-8 bodies; every read of a parsed form is consistent, and an error
/// description echoes a parameter name only when it is a plain identifier.
pub fn form(data: &[u8]) {
    let parsed = Form::parse(data);
    assert_eq!(parsed.is_ok(), std::str::from_utf8(data).is_ok());
    let Ok(form) = parsed else { return };
    for name in [
        "grant_type",
        "subject_token",
        "subject_token_type",
        "actor_token",
        "scope",
        "resource",
        "audience",
        "token",
        "client_id",
        "client_assertion",
    ] {
        let all = form.all(name);
        match form.single(name) {
            Ok(None) => assert!(all.is_empty()),
            Ok(Some(value)) => {
                assert_eq!(all.len(), 1);
                assert!(!value.is_empty(), "empty values count as absent");
            }
            Err(_) => assert!(all.len() > 1),
        }
        assert_eq!(form.required(name).is_ok(), all.len() == 1);
    }
    if let Err(error) = form.refuse_duplicates() {
        assert!(
            error
                .description()
                .chars()
                .all(|c| !c.is_control() && c.is_ascii()),
            "an error description echoed an unsafe parameter name"
        );
    }
}

/// One public P-256 key (no private part anywhere): what a signature is checked against.
fn fixed_keys() -> Option<VerifyingKeySet> {
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "fuzz-1", "alg": "ES256",
        "x": "EFJVsanePIM0bmHpuTAAOTV3hL1zIVuLqvUscQ0xyOM",
        "y": "IMYVBPupd5EC1ypoIWd0b74H-xUVo760nOMGzTpBWo0",
    }]});
    VerifyingKeySet::from_jwks(&jwks, &Algorithm::ALL).ok()
}

/// `UnverifiedJws::parse` and `verify` on arbitrary compact-JWS text: never panics; nothing
/// verifies (the fuzzer holds no private key, and `none`/HMAC are never allowed); a `crit`
/// header is always refused; unverified claim parsing of every claim type never panics.
pub fn jws(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(jws) = UnverifiedJws::parse(text) else {
        return;
    };
    assert!(text.len() <= mandate_token::MAX_TOKEN_BYTES);
    let header = jws.header();
    let _ = header.typ_is("at+jwt");
    let _ = header.typ_is_foreign_explicit(&["oauth-id-jag+jwt"]);
    if let Some(keys) = fixed_keys() {
        let result = jws.verify(&keys, &Algorithm::ALL);
        assert!(
            result.is_err(),
            "an arbitrary token verified against a key whose private half nobody has"
        );
        if header.crit.is_some() {
            assert_eq!(result.err(), Some(mandate_token::JwtError::CriticalHeader));
        }
    }
    if let Ok(claims) = jws.dangerous_unverified_claims::<AccessTokenClaims>() {
        act_invariants(&claims.act);
    }
    let _ = jws.dangerous_unverified_claims::<IdJagClaims>();
    let _ = jws.dangerous_unverified_claims::<UpstreamClaims>();
    let _ = jws.dangerous_unverified_claims::<Value>();
}

fn act_invariants(act: &Act) {
    for limit in [0, 1, 5, 64] {
        let depth = act.depth(limit);
        assert!(depth <= limit + 1);
        assert!(act.actors(limit).len() <= limit);
    }
}

/// Claim deserialisation of the token kinds mandate reads: never panics; an access token that
/// parses survives a serialise/parse round trip unchanged.
pub fn claims(data: &[u8]) {
    if let Ok(claims) = serde_json::from_slice::<AccessTokenClaims>(data) {
        act_invariants(&claims.act);
        if let Ok(json) = serde_json::to_vec(&claims) {
            let again: Result<AccessTokenClaims, _> = serde_json::from_slice(&json);
            assert_eq!(again.ok().as_ref(), Some(&claims));
        }
    }
    if let Ok(claims) = serde_json::from_slice::<IdJagClaims>(data) {
        if let Ok(json) = serde_json::to_vec(&claims) {
            let again: Result<IdJagClaims, _> = serde_json::from_slice(&json);
            assert_eq!(again.ok().as_ref(), Some(&claims));
        }
    }
    let _ = serde_json::from_slice::<UpstreamClaims>(data);
}

/// JWKS and JWK parsing (trusted issuers' documents, agents' registered keys): never panics; a
/// set that loads has at least one key and no private member.
pub fn jwks(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for allowed in [&Algorithm::ALL[..], &[Algorithm::Es256][..]] {
        if let Ok(set) = VerifyingKeySet::from_jwks_json(text, allowed) {
            assert!(!set.is_empty());
            let document: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            let keys = document["keys"].as_array().cloned().unwrap_or_default();
            for key in keys {
                for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                    assert!(key.get(private).is_none(), "a private member was accepted");
                }
            }
        }
    }
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) {
        let _ = thumbprint(&map);
    }
}

/// A cursor over the fuzzer's bytes; past the end every read is 0.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((first, rest)) => {
                self.0 = rest;
                *first
            }
            None => 0,
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.byte()) % items.len()]
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// A signed offset in seconds, -640..=635 in steps of 5.
    fn offset(&mut self) -> i64 {
        (i64::from(self.byte()) - 128) * 5
    }
}

const ISSUER: &str = "https://mandate.example.com";
const CORP: &str = "https://corp.example.com";
const NOW: i64 = 1_800_000_000;
const AGENTS: [&str; 4] = ["assistant", "booking", "helper", "mallory"];
const APPS: [&str; 3] = [
    "https://calendar.example.com",
    "https://mail.example.com",
    "https://bank.example.com",
];
const SCOPES: [&str; 4] = ["cal.read", "cal.write", "mail.read", "admin"];

fn client(name: &str) -> Option<ClientId> {
    ClientId::parse(name).ok()
}

fn audience(bytes: &mut Bytes<'_>) -> Option<Audience> {
    let index = usize::from(bytes.byte()) % (APPS.len() + AGENTS.len());
    match APPS.get(index) {
        Some(app) => Audience::parse(app).ok(),
        None => Audience::parse(&format!("agent:{}", AGENTS[index - APPS.len()])).ok(),
    }
}

fn scopes(bytes: &mut Bytes<'_>) -> ScopeSet {
    let mask = bytes.byte();
    ScopeSet::from_tokens(
        SCOPES
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, s)| *s),
    )
    .unwrap_or_default()
}

fn authority(bytes: &mut Bytes<'_>) -> Authority {
    let mut authority = Authority::new();
    for _ in 0..bytes.byte() % 4 {
        let app = bytes.pick(&APPS);
        authority.insert(app, scopes(bytes));
    }
    authority
}

/// The validator (`mandate_chain::decide`) on a policy, request and subject built from the
/// bytes over a small vocabulary of agents, apps and scopes (so that the fuzzer reaches the
/// interesting branches instead of failing to parse). Whatever it grants obeys DESIGN.md
/// section 5: a policy row allows it, it never exceeds the parent's authority or lifetime, the
/// depth stays within the limits, an agent appears once, and `scope` and `authorization_details`
/// together are refused.
pub fn chain(data: &[u8]) {
    chain_granted(data);
}

/// [`chain`], telling whether the case was granted (so that a corpus can be checked to reach the
/// invariants at all).
pub fn chain_granted(data: &[u8]) -> bool {
    let mut bytes = Bytes(data);
    chain_case(&mut bytes).unwrap_or(false)
}

fn chain_case(bytes: &mut Bytes<'_>) -> Option<bool> {
    let mut rows = Vec::new();
    for _ in 0..bytes.byte() % 10 {
        let max_depth = match bytes.byte() % 8 {
            0..=4 => None,
            n => Some(u32::from(n) - 4),
        };
        rows.push(PolicyRow {
            actor: client(bytes.pick(&AGENTS))?,
            audience: audience(bytes)?,
            scopes: scopes(bytes),
            max_depth,
        });
    }
    let policy = Policy::new(rows);
    let actor = client(bytes.pick(&AGENTS))?;
    let target = audience(bytes)?;
    let target_known = bytes.byte() & 7 != 0;
    let requested_scope = bytes.flag().then(|| scopes(bytes));
    let requested_details = bytes.flag().then(|| authority(bytes));
    let max_chain_depth = u32::from(bytes.byte() % 7);
    let ttl_secs = i64::from(bytes.byte()) * 10;
    let context = ExchangeContext {
        issuer: ISSUER,
        now: NOW,
        ttl_secs,
        max_chain_depth,
        new_hop_id: HopId("hop_new".into()),
        root_chain_id: ChainId("chn_root".into()),
    };
    let request = ExchangeRequest {
        actor: &actor,
        target: &target,
        target_known,
        scope: requested_scope.as_ref(),
        details: requested_details.as_ref(),
    };
    let alias = IssuerAlias::parse("corp").ok()?;
    let user = Subject::from_upstream(&alias, "alice", false).ok()?;

    if bytes.flag() {
        // A root hop from an upstream token.
        let aud: Vec<String> = (0..1 + bytes.byte() % 3)
            .map(|_| {
                bytes
                    .pick(&["assistant", "booking", "0oa-other", ISSUER])
                    .to_owned()
            })
            .collect();
        let azp = bytes.flag().then(|| bytes.pick(&AGENTS));
        let client_id = bytes.flag().then(|| bytes.pick(&AGENTS));
        let may_act = match bytes.byte() % 4 {
            0 => Some(serde_json::json!({"sub": bytes.pick(&AGENTS)})),
            1 => Some(serde_json::json!({"sub": [bytes.pick(&AGENTS)], "iss": CORP})),
            2 => Some(Value::String(bytes.pick(&AGENTS).to_owned())),
            _ => None,
        };
        let mut consents = Vec::new();
        for i in 0..bytes.byte() % 3 {
            consents.push(ConsentGrant {
                id: format!("cg_{i}"),
                subject: user.clone(),
                actor: client(bytes.pick(&AGENTS))?,
                audience: audience(bytes)?,
                scopes: scopes(bytes),
                expires_at: NOW + bytes.offset(),
            });
        }
        let expires_at = NOW + bytes.offset();
        let upstream = UpstreamSubject {
            issuer: CORP,
            alias: &alias,
            subject: user.clone(),
            aud: &aud,
            azp,
            client_id,
            may_act: may_act.as_ref(),
            grant_id: "grant-1".into(),
            expires_at,
            actor_upstream_ids: vec![actor.to_string()],
            consents: &consents,
        };
        let subject = SubjectGrant::Upstream(upstream);
        let result = decide(&policy, &request, &subject, &context);
        check_decision(&policy, &request, &context, &result, expires_at, None);
        Some(result.is_ok())
    } else {
        // A child hop from a hand-off token and its recorded parent.
        let mut actors: Vec<ClientId> = Vec::new();
        for _ in 0..1 + bytes.byte() % 6 {
            actors.push(client(bytes.pick(&AGENTS))?);
        }
        let depth = u32::try_from(actors.len()).ok()?;
        let parent_audience = audience(bytes)?;
        let parent = HopRecord {
            jkt: None,
            request: None,
            id: HopId("hop_parent".into()),
            parent: None,
            chain_id: ChainId("chn_root".into()),
            ancestors: (1..depth).map(|i| HopId(format!("hop_{i}"))).collect(),
            subject: user.clone(),
            actors: actors.clone(),
            client_id: actors.first()?.clone(),
            audience: parent_audience.clone(),
            authority: authority(bytes),
            issued_at: NOW - 60,
            expires_at: NOW + bytes.offset(),
            depth,
            depth_limit: depth + u32::from(bytes.byte() % 4),
            evidence: mandate_chain::Evidence {
                kind: EvidenceKind::HandOff,
                reference: "hop_0".into(),
            },
            upstream: None,
        };
        let names: Vec<String> = actors.iter().map(ToString::to_string).collect();
        let mut claims = AccessTokenClaims {
            cnf: None,
            iss: ISSUER.into(),
            sub: user.to_string(),
            aud: parent_audience.to_string(),
            client_id: names.first()?.clone(),
            scope: None,
            authorization_details: Some(parent.authority.to_details()),
            iat: parent.issued_at,
            nbf: parent.issued_at,
            exp: parent.expires_at,
            jti: parent.id.to_string(),
            act: Act::from_current_first(&names)?,
            chain_id: parent.chain_id.to_string(),
            ancestors: parent.ancestors.iter().map(ToString::to_string).collect(),
        };
        // Occasionally a token that disagrees with its record.
        match bytes.byte() % 16 {
            0 => claims.exp += 1,
            1 => {
                claims.ancestors.pop();
            }
            2 => {
                if let Some(shorter) = Act::from_current_first(&names[..names.len() / 2]) {
                    claims.act = shorter;
                }
            }
            3 => claims.jti = "hop_other".into(),
            _ => {}
        }
        let hop = bytes.flag().then_some(&parent);
        let subject = SubjectGrant::Mandate(MandateSubject {
            claims: &claims,
            hop,
        });
        let result = decide(&policy, &request, &subject, &context);
        if let Ok(decision) = &result {
            let parent = hop?;
            assert_eq!(
                claims.aud,
                format!("agent:{actor}"),
                "only the addressee presents"
            );
            assert!(!parent.actors.contains(&actor), "an agent appeared twice");
            assert!(
                decision.hop.authority.is_subset(&parent.authority),
                "a child hop widened its parent's authority"
            );
            assert_eq!(decision.hop.depth, parent.depth + 1);
            assert!(decision.hop.depth_limit <= parent.depth_limit);
            assert_eq!(decision.hop.ancestors.len(), parent.ancestors.len() + 1);
            assert_eq!(decision.hop.actors.len(), parent.actors.len() + 1);
        }
        check_decision(
            &policy,
            &request,
            &context,
            &result,
            claims.exp,
            Some(&parent),
        );
        Some(result.is_ok())
    }
}

fn check_decision(
    policy: &Policy,
    request: &ExchangeRequest<'_>,
    context: &ExchangeContext<'_>,
    result: &Result<Decision, mandate_chain::Refusal>,
    subject_expiry: i64,
    _parent: Option<&HopRecord>,
) {
    let Ok(decision) = result else { return };
    let hop = &decision.hop;
    assert!(
        request.scope.is_none() || request.details.is_none(),
        "scope and authorization_details together were accepted"
    );
    assert!(request.target_known, "an unknown audience was accepted");
    assert_eq!(&hop.client_id, request.actor);
    assert_eq!(&hop.audience, request.target);
    assert_eq!(decision.claims.act.sub, request.actor.to_string());
    assert_eq!(decision.claims.aud, request.target.to_string());
    assert!(hop.expires_at > context.now, "a token born expired");
    assert!(hop.expires_at <= context.now + context.ttl_secs);
    assert!(
        hop.expires_at <= subject_expiry,
        "a token outlived its subject token"
    );
    assert_eq!(decision.claims.exp, hop.expires_at);
    assert!(
        hop.depth <= context.max_chain_depth,
        "max_chain_depth exceeded"
    );
    assert!(hop.depth <= hop.depth_limit);
    assert!(!hop.authority.is_empty(), "an empty authority was granted");
    let row = policy.row(request.actor, request.target);
    assert!(row.is_some(), "a grant without a policy row");
    let Some(row) = row else { return };
    if let Some(max_depth) = row.max_depth {
        assert!(hop.depth <= max_depth, "a row's max_depth was exceeded");
    }
    for (app, scopes) in hop.authority.pairs() {
        assert!(scopes.is_subset(&row.scopes), "beyond the policy row");
        if let Some(requested) = request.scope {
            assert!(scopes.is_subset(requested), "beyond the requested scope");
        }
        if let Some(details) = request.details {
            if matches!(request.target, Audience::Agent(_)) {
                assert!(
                    details.scopes(app).is_some_and(|d| scopes.is_subset(d)),
                    "beyond the requested authorization_details"
                );
            }
        }
        match request.target {
            Audience::App(uri) => assert_eq!(app, uri.as_str()),
            Audience::Agent(_) => {
                let own = Audience::parse(app)
                    .ok()
                    .and_then(|app| policy.row(request.actor, &app).map(|r| r.scopes.clone()));
                assert!(
                    own.is_some_and(|own| scopes.is_subset(&own)),
                    "passed on authority the delegator could not obtain itself"
                );
            }
        }
    }
}
