//! `kiln serve`: the service starts with embedded defaults, answers /health and stops cleanly.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::TestApp;

#[tokio::test]
async fn health_answers_ok() {
    let app = TestApp::start().await;
    let response = reqwest::get(app.url("/health")).await.expect("request");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json body");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

/// Many `/health` checks at once all find kiln healthy: they share checks instead of racing
/// on the probe file (a load balancer and a benchmark once got 503s from each other).
#[tokio::test(flavor = "multi_thread")]
async fn health_checks_at_once_all_answer_ok() {
    let app = TestApp::start().await;
    let client = reqwest::Client::new();
    let answers = futures_util::future::join_all((0..64).map(|_| async {
        let response = client
            .get(app.url("/health"))
            .send()
            .await
            .expect("request");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }))
    .await;
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test]
async fn the_embedded_registry_answers_under_v2() {
    let app = TestApp::start().await;
    let anonymous = reqwest::get(app.url("/v2/")).await.expect("request");
    assert_eq!(
        anonymous.status(),
        401,
        "the base check asks for credentials"
    );
    let challenge = anonymous.headers()["www-authenticate"]
        .to_str()
        .expect("ascii");
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"http://{}/registry/token\",service=\"kiln\"",
            app.address
        )
    );
    // Anonymous callers get a pull token, which passes the base check but cannot push.
    let token: serde_json::Value = reqwest::get(app.url("/registry/token?service=kiln"))
        .await
        .expect("token request")
        .json()
        .await
        .expect("token json");
    let pull_token = token["token"].as_str().expect("a token");
    // embedded_registry.token_ttl_secs, an hour by default.
    assert_eq!(token["expires_in"], 3600);
    let http = reqwest::Client::new();
    let with_pull_token = http
        .get(app.url("/v2/"))
        .bearer_auth(pull_token)
        .send()
        .await
        .expect("request");
    assert_eq!(with_pull_token.status(), 200);
    let push = http
        .post(app.url("/v2/library/x/blobs/uploads/"))
        .bearer_auth(pull_token)
        .send()
        .await
        .expect("request");
    assert_eq!(push.status(), 401, "a pull token does not push");
    let refused = http
        .get(app.url("/registry/token"))
        .basic_auth(crate::support::PUSHER.0, Some("wrong"))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 401, "wrong credentials get no token");
    let response = reqwest::Client::new()
        .get(app.url("/v2/"))
        .basic_auth(crate::support::PUSHER.0, Some(crate::support::PUSHER.1))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let app = TestApp::start().await;
    let response = reqwest::get(app.url("/nope")).await.expect("request");
    assert_eq!(response.status(), 404);
}

/// The README's first command: `kiln serve` with nothing but a data directory and a port.
#[tokio::test]
async fn the_binary_serves_and_stops_on_sigterm() {
    let data = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("serve")
        .env_clear()
        .env("KILN_LISTEN", format!("127.0.0.1:{port}"))
        .env("KILN_DATA_DIR", data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln serve starts");
    let url = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match reqwest::get(&url).await {
            Ok(response) => break response.status(),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(err) => panic!("kiln serve did not answer: {err}"),
        }
    };
    assert_eq!(status, 200);
    assert!(
        data.path().join("kiln.db").is_file(),
        "the store lives in the data directory"
    );

    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let exit = child.wait().expect("kiln exits");
    assert!(
        exit.success(),
        "kiln serve exits cleanly on SIGTERM: {exit}"
    );
}
