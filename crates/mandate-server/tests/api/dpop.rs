//! RFC 9449 at `/token` over real HTTP: a proof binds the issued token (`token_type: DPoP`,
//! `cnf.jkt`, introspection and the ledger say so), a bound hand-off is exchanged only with its
//! recipient's proof, and every broken proof is refused with `invalid_dpop_proof` and records
//! nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mandate_testkit::{
    claims_of, delegation_settings, exchange_form, id_token_claims, KeyKind, TestKey, TestServer,
    ADMIN_READER, CAL, CORP,
};
use mandate_token::{SigningAlgorithm, SigningKey};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Env {
    server: TestServer,
    corp: TestKey,
}

async fn env() -> Env {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    Env { server, corp }
}

fn now() -> i64 {
    mandate_testkit::now()
}

impl Env {
    fn id_token(&self) -> String {
        self.corp
            .sign(None, &id_token_claims(CORP, "alice", "assistant"))
            .unwrap()
    }

    fn proof(&self, key: &SigningKey, jti: &str) -> String {
        key.sign_dpop_proof(&json!({"jti": jti, "htm": "POST",
            "htu": self.server.url("/token"), "iat": now()}))
            .unwrap()
    }

    /// An exchange by `client` (secret `<client>-secret`, booking-tool's `booking-secret`)
    /// with the given `DPoP` headers.
    async fn exchange(
        &self,
        client: &str,
        token: &str,
        kind: &str,
        audience: &str,
        proofs: &[&str],
    ) -> (StatusCode, Value) {
        let form = exchange_form(token, kind, audience, &[]);
        let secret = if client == "booking-tool" {
            "booking-secret".to_owned()
        } else {
            format!("{client}-secret")
        };
        let mut request = self
            .server
            .http
            .post(self.server.url("/token"))
            .basic_auth(client, Some(secret))
            .form(&form);
        for proof in proofs {
            request = request.header("DPoP", *proof);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn chain_of(&self, token: &str) -> Value {
        let chain = claims_of(token)["chain_id"].as_str().unwrap().to_owned();
        let response = self
            .server
            .admin_get(&format!("/admin/chains/{chain}"), Some(ADMIN_READER))
            .await
            .unwrap();
        response.json().await.unwrap()
    }
}

fn jkt(key: &SigningKey) -> String {
    mandate_token::thumbprint(key.public_key().jwk()).unwrap()
}

#[tokio::test]
async fn a_proof_binds_every_hop_to_the_key_of_its_holder() {
    let env = env().await;
    let (a, b) = (
        SigningKey::generate(SigningAlgorithm::Es256).unwrap(),
        SigningKey::generate(SigningAlgorithm::EdDsa).unwrap(),
    );
    let (status, body) = env
        .exchange(
            "assistant",
            &env.id_token(),
            "id_token",
            "agent:booking-tool",
            &[&env.proof(&a, "a-1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let hand_off = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&hand_off)["cnf"]["jkt"], jkt(&a));

    // Without the booking tool's own proof, the bound hand-off goes nowhere.
    let (status, body) = env
        .exchange("booking-tool", &hand_off, "access_token", CAL, &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_dpop_proof", "{body}");
    let (status, body) = env
        .exchange(
            "booking-tool",
            &hand_off,
            "access_token",
            CAL,
            &[&env.proof(&b, "b-1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let calendar = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&calendar)["cnf"]["jkt"], jkt(&b));

    // The ledger shows each hop's key.
    let chain = env.chain_of(&calendar).await;
    let root = &chain["roots"][0];
    assert_eq!(root["jkt"], jkt(&a), "{chain}");
    assert_eq!(root["children"][0]["jkt"], jkt(&b), "{chain}");

    // Introspection says the token is bound, and to what.
    let response = env
        .server
        .post_form(
            "/introspect",
            &[("token", calendar.as_str())],
            &mandate_testkit::ClientAuth::Basic("calendar-api".into(), "calendar-secret".into()),
        )
        .await
        .unwrap();
    let introspected: Value = response.json().await.unwrap();
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["token_type"], "DPoP");
    assert_eq!(introspected["cnf"]["jkt"], jkt(&b));

    // Discovery lists the proof algorithms.
    let metadata: Value = env
        .server
        .http
        .get(env.server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let algs = metadata["dpop_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(algs.contains(&json!("ES256")) && algs.contains(&json!("EdDSA")));
    assert!(!algs.iter().any(|a| a.as_str().unwrap().starts_with("HS")));
}

/// A proof `key` signs over `header` and `claims` exactly as given.
fn forged(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    // A signature by `key` over another input: it verifies with no key, so a case is refused
    // either before the signature is looked at or by it.
    let genuine = key.sign_dpop_proof(claims).unwrap();
    let signature = genuine.rsplit('.').next().unwrap();
    format!("{input}.{signature}")
}

#[tokio::test]
async fn broken_proofs_are_refused_and_record_nothing() {
    let env = env().await;
    let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let url = env.server.url("/token");
    let claims = |jti: &str| json!({"jti": jti, "htm": "POST", "htu": url, "iat": now()});
    let mut public = key.public_key().jwk().clone();
    public.remove("kid");
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD
            .encode(json!({"typ": "dpop+jwt", "alg": "none", "jwk": public}).to_string()),
        URL_SAFE_NO_PAD.encode(claims("n-1").to_string())
    );
    let hs = forged(
        &key,
        &json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}),
        &claims("h-1"),
    );
    let mut private = public.clone();
    private.insert("d".into(), json!("AAAA"));
    let with_private = forged(
        &key,
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private}),
        &claims("p-1"),
    );
    let other_key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let mut other_public = other_key.public_key().jwk().clone();
    other_public.remove("kid");
    let signed_by_another = forged(
        &key,
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": other_public}),
        &claims("o-1"),
    );
    let sign = |c: Value| key.sign_dpop_proof(&c).unwrap();
    let wrong_method = sign(json!({"jti": "m-1", "htm": "GET", "htu": url, "iat": now()}));
    let wrong_url = sign(json!({"jti": "u-1", "htm": "POST",
        "htu": env.server.url("/introspect"), "iat": now()}));
    let stale = sign(json!({"jti": "s-1", "htm": "POST", "htu": url, "iat": now() - 600}));
    let wrong_typ = TestKey::generate(KeyKind::Es256, None)
        .unwrap()
        .sign(None, &claims("t-1"))
        .unwrap();
    let good = env.proof(&key, "g-1");
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("alg none", vec![none]),
        ("HS256 with a symmetric jwk", vec![hs]),
        ("private key in jwk", vec![with_private]),
        ("signed by another key", vec![signed_by_another]),
        ("another method", vec![wrong_method]),
        ("another URL", vec![wrong_url]),
        ("stale", vec![stale]),
        ("typ JWT", vec![wrong_typ]),
        ("two DPoP headers", vec![good.clone(), good.clone()]),
        ("oversized", vec!["a".repeat(9_000)]),
    ];
    for (name, proofs) in &cases {
        let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
        let (status, body) = env
            .exchange("assistant", &env.id_token(), "id_token", CAL, &proofs)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert_eq!(body["error"], "invalid_dpop_proof", "{name}: {body}");
    }
    // Nothing was recorded.
    let listed = env
        .server
        .admin_get("/admin/chains", Some(ADMIN_READER))
        .await
        .unwrap();
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["chains"], json!([]), "{listed}");

    // The good proof works once; the same proof again is a replay.
    let (status, body) = env
        .exchange("assistant", &env.id_token(), "id_token", CAL, &[&good])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = env
        .exchange("assistant", &env.id_token(), "id_token", CAL, &[&good])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_dpop_proof", "{body}");
}

/// `dpop = "required"` in an agent's registration: its bearer requests are refused, its proven
/// ones bound; the admin API shows the policy.
#[tokio::test]
async fn an_agent_registered_with_dpop_required_gets_only_bound_tokens() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    for client in &mut settings.clients {
        if client.client_id.as_str() == "assistant" {
            client.dpop = mandate_model::DpopPolicy::Required;
        }
    }
    let env = Env {
        server: TestServer::spawn(settings).await.unwrap(),
        corp,
    };
    let (status, body) = env
        .exchange("assistant", &env.id_token(), "id_token", CAL, &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_dpop_proof", "{body}");
    let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let (status, body) = env
        .exchange(
            "assistant",
            &env.id_token(),
            "id_token",
            CAL,
            &[&env.proof(&key, "q-1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let shown: Value = env
        .server
        .admin_get("/admin/agents/assistant", Some(ADMIN_READER))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["dpop"], "required", "{shown}");
}

/// `[dpop] require_nonce`: a proof without the server's nonce (or with a made-up one) is
/// answered `use_dpop_nonce` with the nonce in `DPoP-Nonce`; with it, the token is issued, and
/// every token response hands the current nonce over.
#[tokio::test]
async fn with_nonces_required_a_proof_must_carry_the_servers_nonce() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.dpop.require_nonce = true;
    let env = Env {
        server: TestServer::spawn(settings).await.unwrap(),
        corp,
    };
    let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let proof = |jti: &str, nonce: Option<&str>| {
        let mut claims = json!({"jti": jti, "htm": "POST", "htu": env.server.url("/token"),
            "iat": now()});
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        key.sign_dpop_proof(&claims).unwrap()
    };
    let id_token = env.id_token();
    let send = |dpop: String| {
        let form = exchange_form(&id_token, "id_token", CAL, &[]);
        env.server
            .http
            .post(env.server.url("/token"))
            .basic_auth("assistant", Some("assistant-secret"))
            .header("DPoP", dpop)
            .form(&form)
            .send()
    };
    let mut nonces = Vec::new();
    for (jti, nonce) in [("n-1", None), ("n-2", Some("made-up"))] {
        let response = send(proof(jti, nonce)).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let nonce = response.headers()["dpop-nonce"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "use_dpop_nonce", "{body}");
        nonces.push(nonce);
    }
    assert_eq!(nonces[0], nonces[1], "one nonce at a time");
    assert!(nonces[0].len() >= 20);
    let response = send(proof("n-3", Some(&nonces[0]))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["dpop-nonce"], nonces[0].as_str());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    // Nothing was issued for the refused proofs: one chain only.
    let listed: Value = env
        .server
        .admin_get("/admin/chains", Some(ADMIN_READER))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["chains"].as_array().unwrap().len(), 1, "{listed}");
}

/// A nonce is handed out for five minutes and accepted for five more, then refused with the
/// current one; a nonce computed for the future is no nonce at all (fixed clock, no sleeps).
#[tokio::test]
async fn a_nonce_lives_one_period_after_its_own_and_no_longer() {
    use mandate_model::{Clock, FixedClock};
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.dpop.require_nonce = true;
    // The start of a five-minute period, so that each step below lands in a known one.
    let start = (now() / 300 + 1) * 300;
    let clock = std::sync::Arc::new(FixedClock::at(start));
    let server = TestServer::spawn_with(
        settings,
        mandate_server::BuildOptions {
            clock: Some(clock.clone()),
            ..mandate_server::BuildOptions::default()
        },
    )
    .await
    .unwrap();
    let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let mut serial = 0;
    let mut exchange = |nonce: Option<String>| {
        serial += 1;
        let at = clock.now_secs();
        let mut claims = json!({"jti": format!("w-{serial}"), "htm": "POST",
            "htu": server.url("/token"), "iat": at});
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        let proof = key.sign_dpop_proof(&claims).unwrap();
        let mut id_token = id_token_claims(CORP, "alice", "assistant");
        id_token["iat"] = json!(at);
        id_token["exp"] = json!(at + 600);
        let subject_token = corp.sign(None, &id_token).unwrap();
        let form = exchange_form(&subject_token, "id_token", CAL, &[]);
        let request = server
            .http
            .post(server.url("/token"))
            .basic_auth("assistant", Some("assistant-secret"))
            .header("DPoP", proof)
            .form(&form);
        async move {
            let response = request.send().await.unwrap();
            let nonce = response.headers()["dpop-nonce"]
                .to_str()
                .unwrap()
                .to_owned();
            (response.status(), nonce)
        }
    };
    let (status, first) = exchange(None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    clock.advance(299);
    assert_eq!(exchange(Some(first.clone())).await.0, StatusCode::OK);
    // The next period hands out another nonce, and still takes the first.
    clock.advance(1);
    let (status, second) = exchange(Some(first.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(second, first);
    // Two periods on, the first is refused, with the current one to use.
    clock.advance(300);
    let (status, third) = exchange(Some(first.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_ne!(third, second);
    assert_eq!(exchange(Some(third.clone())).await.0, StatusCode::OK);
    // The nonce of the period after the current one is not taken either: it is what a client
    // could only know by holding the key.
    clock.advance(-300);
    assert_eq!(exchange(Some(third)).await.0, StatusCode::BAD_REQUEST);
    server.stop().await;
}
