//! The admin console in a real headless Chromium (Debian's `chromium`, driven by its
//! `chromedriver` over WebDriver with fantoccini) against the real actix app over HTTP: sign in,
//! find a chain, read its graph, preview a hop's revocation and confirm it, see the subtree dead,
//! and a downstream verifier (mandate-verify following the revocation feed) refuse the token; a
//! `read` credential sees no revoke button and cannot revoke by crafting the request; a change
//! without the CSRF token (or from another origin) is refused; nothing of the console is on the
//! public listener. Screenshots of each page go to `target/console-screenshots/`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use mandate_testkit::{
    claims_of, delegation_issue, delegation_settings, id_token_claims, KeyKind, TestKey,
    TestServer, ADMIN_OPS, ADMIN_READER, CAL, CORP,
};
use mandate_verify::{Feed, FeedConfig, Verifier};
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn driver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver runs (apt-get install chromium chromium-driver)");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { child, url }
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--no-first-run", "--disable-extensions"]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn sign_in(browser: &Client, server: &TestServer, name: &str, secret: &str) {
    browser.goto(&server.admin_url("/console/")).await.unwrap();
    // Not signed in: the console sends the browser to its sign-in page.
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/signin"));
    browser
        .find(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys(name)
        .await
        .unwrap();
    browser
        .find(Locator::Id("secret"))
        .await
        .unwrap()
        .send_keys(secret)
        .await
        .unwrap();
    browser
        .find(Locator::Css("form.stack button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The click returns before the browser has followed the redirect: wait for the next page.
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("form.signout"))
        .await
        .unwrap();
    let url = browser.current_url().await.unwrap();
    assert!(
        url.path().ends_with("/console/agents"),
        "signed in as {name}: at {url}: {}",
        browser.source().await.unwrap()
    );
}

/// Waits (a redirect or a form submission lands after the click returns) for `css`.
async fn arrived(browser: &Client, css: &str) {
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// The browser's console session cookie and the CSRF token of the page it shows.
async fn session_and_csrf(browser: &Client) -> (String, String) {
    let cookie = browser
        .get_named_cookie("mandate_console")
        .await
        .unwrap()
        .value()
        .to_owned();
    let csrf = browser
        .find(Locator::Css("input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    (cookie, csrf)
}

#[tokio::test]
async fn an_administrator_revokes_a_hop_from_its_graph_and_a_reader_cannot() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    // alice's assistant hands off to the booking tool, which gets a calendar token.
    let id_token = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let hand_off = delegation_issue(
        &server,
        &id_token,
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await
    .unwrap();
    let calendar = delegation_issue(&server, &hand_off, "access_token", CAL, "booking-tool")
        .await
        .unwrap();
    let root = claims_of(&hand_off)["jti"].as_str().unwrap().to_owned();
    let leaf = claims_of(&calendar)["jti"].as_str().unwrap().to_owned();

    // The calendar app verifies with mandate-verify, following mandate's revocation feed.
    let feed = Feed::connect(
        &server.url("/revocations"),
        "calendar-api",
        "calendar-secret",
        FeedConfig::default(),
    )
    .await
    .unwrap();
    assert!(feed.ready(Duration::from_secs(10)).await);
    let verifier = Verifier::builder(server.issuer(), CAL)
        .jwks(server.get_json("/jwks").await.unwrap())
        .revocation(Arc::new(feed))
        .build()
        .await
        .unwrap();
    // The first heartbeat on the feed makes the verifier's copy fresh.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(error) = verifier.verify(&calendar).await {
        assert!(
            Instant::now() < deadline,
            "not accepted before the revocation: {error}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let driver = driver().await;
    let ops = browser(&driver).await;
    sign_in(&ops, &server, "ops-oncall", ADMIN_OPS).await;
    screenshot(&ops, "1-agents").await;
    assert!(text_of(&ops, "main").await.contains("booking-tool"));

    // Find alice's chain through the filters.
    ops.goto(&server.admin_url("/console/chains"))
        .await
        .unwrap();
    ops.find(Locator::Id("subject"))
        .await
        .unwrap()
        .send_keys("corp|alice")
        .await
        .unwrap();
    ops.find(Locator::Css("form.filters button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    screenshot(&ops, "2-chains").await;
    ops.find(Locator::Css("tbody th a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    arrived(&ops, "#chain-graph").await;
    // The graph: one node per hop, the leaf drawn under the root, both live.
    let nodes = ops
        .find_all(Locator::Css("#chain-graph g.hop"))
        .await
        .unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(
        ops.find_all(Locator::Css("#chain-graph path.link"))
            .await
            .unwrap()
            .len()
            == 1
    );
    let graph = text_of(&ops, "#chain-graph").await;
    assert!(graph.contains("assistant → agent:booking-tool"), "{graph}");
    assert!(
        graph.contains("booking-tool → https://calendar.example.com"),
        "{graph}"
    );
    assert!(ops
        .find_all(Locator::Css("#chain-graph g.hop.dead"))
        .await
        .unwrap()
        .is_empty());
    screenshot(&ops, "3-chain").await;

    // Preview the root's revocation: exactly the root and the leaf die.
    ops.find(Locator::Css(&format!("tr#hop-{root} a.button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrived(&ops, "#doomed-count").await;
    let doomed: Vec<String> = {
        let mut ids = Vec::new();
        for row in ops
            .find_all(Locator::Css("tr.doomed th code"))
            .await
            .unwrap()
        {
            ids.push(row.text().await.unwrap());
        }
        ids
    };
    assert_eq!(doomed.len(), 2, "{doomed:?}");
    assert!(doomed.contains(&root) && doomed.contains(&leaf));
    assert_eq!(text_of(&ops, "#doomed-count").await, "2");
    screenshot(&ops, "4-preview").await;
    // The preview changed nothing.
    verifier
        .verify(&calendar)
        .await
        .expect("still accepted after the preview");

    ops.find(Locator::Id("reason"))
        .await
        .unwrap()
        .send_keys("incident 12: the booking tool leaked its token")
        .await
        .unwrap();
    ops.find(Locator::Id("confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrived(&ops, "#chain-graph").await;
    // Back on the chain: the whole subtree is drawn dead.
    assert!(ops
        .current_url()
        .await
        .unwrap()
        .path()
        .contains("/console/chains/"));
    let dead = ops
        .find_all(Locator::Css("#chain-graph g.hop.dead"))
        .await
        .unwrap();
    assert_eq!(dead.len(), 2, "the root and everything below it are dead");
    assert!(text_of(&ops, &format!("tr#hop-{leaf}"))
        .await
        .contains("revoked"));
    screenshot(&ops, "5-chain-revoked").await;

    // The downstream verifier refuses the calendar token.
    let deadline = Instant::now() + Duration::from_secs(10);
    while verifier.verify(&calendar).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the verifier still accepts the revoked token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The audit stream names who did it, through the console.
    ops.goto(&server.admin_url("/console/audit?action=revoke.hop"))
        .await
        .unwrap();
    assert!(text_of(&ops, "tbody").await.contains("ops-oncall"));
    screenshot(&ops, "6-audit").await;
    ops.goto(&server.admin_url("/console/policies?agent=assistant&subject_token_type=id_token&audience=https%3A%2F%2Fcalendar.example.com"))
        .await
        .unwrap();
    assert_eq!(text_of(&ops, "p[role=status]").await, "Allowed");
    screenshot(&ops, "7-policies").await;

    // A second chain for the reader to look at: no revoke button anywhere.
    let bob = corp
        .sign(None, &id_token_claims(CORP, "bob", "assistant"))
        .unwrap();
    let bobs = delegation_issue(&server, &bob, "id_token", CAL, "assistant")
        .await
        .unwrap();
    let bobs_hop = claims_of(&bobs)["jti"].as_str().unwrap().to_owned();
    let reader = browser(&driver).await;
    sign_in(&reader, &server, "auditor", ADMIN_READER).await;
    reader
        .goto(&server.admin_url("/console/chains?subject=corp%7Cbob"))
        .await
        .unwrap();
    reader
        .find(Locator::Css("tbody th a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(reader
        .find_all(Locator::Css("a.button.danger"))
        .await
        .unwrap()
        .is_empty());
    screenshot(&reader, "8-reader-chain").await;
    // The preview page tells the reader its role cannot revoke, and offers no confirmation.
    reader
        .goto(&server.admin_url(&format!("/console/revoke/hop/{bobs_hop}")))
        .await
        .unwrap();
    assert!(reader
        .find_all(Locator::Id("confirm"))
        .await
        .unwrap()
        .is_empty());
    assert!(text_of(&reader, "p.error").await.contains("'revoke' role"));

    // Crafted requests: the reader's own session and CSRF token, and the role still refuses.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (reader_cookie, reader_csrf) = session_and_csrf(&reader).await;
    let post = |path: String,
                cookie: String,
                form: Vec<(&'static str, String)>,
                origin: Option<String>| {
        let mut request = http
            .post(server.admin_url(&path))
            .header("cookie", format!("mandate_console={cookie}"))
            .form(&form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let revoke_bob = format!("/console/revoke/hop/{bobs_hop}");
    let refused = post(
        revoke_bob.clone(),
        reader_cookie,
        vec![("csrf", reader_csrf)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 403, "a reader cannot revoke");
    // The ops session, without its CSRF token, with a wrong one, or from another origin.
    let (ops_cookie, ops_csrf) = session_and_csrf(&ops).await;
    for (form, origin) in [
        (vec![], None),
        (vec![("csrf", "forged".to_owned())], None),
        (
            vec![("csrf", ops_csrf.clone())],
            Some("http://evil.example".to_owned()),
        ),
    ] {
        let refused = post(revoke_bob.clone(), ops_cookie.clone(), form, origin)
            .await
            .unwrap();
        assert_eq!(refused.status(), 403);
    }
    let verified = verifier.verify(&bobs).await;
    assert!(
        verified.is_ok(),
        "bob's token survived every refused attempt: {verified:?}"
    );
    // With the token, the same session can (the refusals above were the CSRF check's).
    let origin = server.admin_url("").trim_end_matches('/').to_owned();
    let done = post(
        revoke_bob,
        ops_cookie.clone(),
        vec![("csrf", ops_csrf.clone())],
        Some(origin),
    )
    .await
    .unwrap();
    assert_eq!(done.status(), 303);

    // Signing out ends the session.
    ops.goto(&server.admin_url("/console/agents"))
        .await
        .unwrap();
    ops.find(Locator::Css("form.signout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The click returns before the browser has followed the redirect: wait for the sign-in form.
    ops.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("secret"))
        .await
        .unwrap();
    assert!(ops
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/signin"));
    let after = http
        .get(server.admin_url("/console/agents"))
        .header("cookie", format!("mandate_console={ops_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 303, "the old cookie no longer signs in");

    ops.close().await.unwrap();
    reader.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn the_console_is_not_on_the_public_listener_and_its_pages_are_locked_down() {
    let corp = TestKey::generate(KeyKind::Es256, None).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [
        "/console",
        "/console/",
        "/console/signin",
        "/console/agents",
        "/console/static/console.css",
    ] {
        let public = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(public.status(), 404, "{path} on the public listener");
    }
    let signin = http
        .get(server.admin_url("/console/signin"))
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), 200);
    let csp = signin.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("script-src"), "no script is allowed");
    let body = signin.text().await.unwrap();
    assert!(!body.contains("<script"), "no script on any page");
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "nothing fetched from elsewhere"
    );
    // Signed out, every page sends the browser to sign in; a wrong secret is a 401 page.
    let agents = http
        .get(server.admin_url("/console/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(agents.status(), 303);
    let wrong = http
        .post(server.admin_url("/console/signin"))
        .form(&[("name", "ops-oncall"), ("secret", "not-the-secret")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // A right secret under another credential's name does not sign in either.
    let swapped = http
        .post(server.admin_url("/console/signin"))
        .form(&[("name", "auditor"), ("secret", ADMIN_OPS)])
        .send()
        .await
        .unwrap();
    assert_eq!(swapped.status(), 401);
    // Login CSRF: a sign-in posted from another site's page is refused, right secret or not.
    for (header, value) in [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let foreign = http
            .post(server.admin_url("/console/signin"))
            .header(header, value)
            .form(&[("name", "ops-oncall"), ("secret", ADMIN_OPS)])
            .send()
            .await
            .unwrap();
        assert_eq!(foreign.status(), 403, "{header}: {value}");
        assert!(foreign.headers().get("set-cookie").is_none());
    }
    let right = http
        .post(server.admin_url("/console/signin"))
        .form(&[("name", "ops-oncall"), ("secret", ADMIN_OPS)])
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 303);
    let cookie = right.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("mandate_console="));
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP here; Secure is set on TLS listeners"
    );
    // Escaped: a user name with markup is text on the page.
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = http
        .get(server.admin_url("/console/chains?subject=%3Cscript%3Ealert(1)%3C%2Fscript%3E"))
        .header("cookie", session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("<script>alert(1)"), "markup is escaped");
    // A change sent cross-site with this session is refused before the CSRF token is looked at.
    let cross_site = http
        .post(server.admin_url("/console/signout"))
        .header("cookie", cookie.split(';').next().unwrap())
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", "whatever")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    server.stop().await;
}
