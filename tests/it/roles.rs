//! `kiln serve --role`: API nodes and workers. A node that is one of several refuses to start
//! without the shared secret, and says how to set it; a worker answers only `/health` and
//! `/metrics`; nodes given the same secret accept each other's registry tokens, build-context
//! upload tickets and form tokens, and a node with another secret refuses them; a worker's
//! `/health` checks the registry it pushes to.

use std::process::{Command, Stdio};
use std::sync::Arc;

use kiln::api::ops::{Ops, RegistryProbe, worker_router};
use kiln::config::{Config, NodeRole};
use kiln::credentials::{Credentials, Secret};
use kiln::store::{SqliteStore, Store};
use sha2::{Digest as _, Sha256};

use crate::support::distribution::Distribution;
use crate::support::forms::{form_session, signup_token};
use crate::support::{REGISTRY_USER, TestApp};

const SECRET: &str = "roles-test-secret-0123456789abcdef";

/// `kiln serve` with `args` and `env` alone: its exit status and standard error.
fn serve(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let data = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("serve")
        .args(args)
        .env_clear()
        .env("KILN_LISTEN", "127.0.0.1:0")
        .env("KILN_DATA_DIR", data.path())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("kiln runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn nodes_of_several_refuse_to_start_without_the_shared_secret() {
    for args in [&["--role", "api"][..], &["--role", "worker"]] {
        let (code, stderr) = serve(args, &[]);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("secret_key is not valid: is missing, and role")
                && stderr.contains("KILN_SECRET_KEY"),
            "{args:?}: {stderr}"
        );
    }
    // KILN_ROLE says the same as --role.
    let (code, stderr) = serve(&[], &[("KILN_ROLE", "api")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("role api needs it"), "{stderr}");
    // A short secret, and a role kiln does not have, are named.
    let (code, stderr) = serve(&["--role", "api"], &[("KILN_SECRET_KEY", "short")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("secret_key is not valid: is shorter than 32 characters"),
        "{stderr}"
    );
    let (code, stderr) = serve(&["--role", "builder"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("[possible values: all, api, worker]"),
        "{stderr}"
    );
    let (code, stderr) = serve(&[], &[("KILN_ROLE", "builder")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("KILN_ROLE is not valid: \"builder\" is not all, api or worker"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_worker_answers_health_and_metrics_alone() {
    let worker = TestApp::start_with(|config| {
        config.role = NodeRole::Worker;
        config.secret_key = Some(Secret::new(SECRET));
    })
    .await;
    let health = reqwest::get(worker.url("/health")).await.expect("request");
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    let metrics = reqwest::get(worker.url("/metrics")).await.expect("request");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    assert!(text.contains("/health"), "requests are counted: {text}");
    for path in [
        "/",
        "/v2/",
        "/v1/build/x",
        "/container-token",
        "/registry/token",
    ] {
        let response = reqwest::get(worker.url(path)).await.expect("request");
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert!(
            body.to_string()
                .contains("send API requests to a node of role api or all"),
            "{path}: {body}"
        );
    }
}

/// Two API nodes with one secret: a registry token, an upload ticket and a page's form token
/// from one are good at the other; a third node with a secret of its own refuses them.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_with_one_secret_accept_each_others_tokens_and_tickets() {
    let node = |secret: &'static str| {
        TestApp::start_with(move |config| {
            config.role = NodeRole::Api;
            config.secret_key = Some(Secret::new(secret));
        })
    };
    let a = node(SECRET).await;
    let b = node(SECRET).await;
    let stranger = node("another-secret-of-32-characters-at-least").await;

    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .get(a.url("/registry/token?service=kiln&scope=repository:alice/x:push,pull"))
        .basic_auth(REGISTRY_USER.0, Some(REGISTRY_USER.1))
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token json");
    let token = token["token"].as_str().expect("a token");
    let start_upload = |node: &TestApp| {
        http.post(node.url("/v2/alice/x/blobs/uploads/"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(start_upload(&b).await.expect("push").status(), 202);
    assert_eq!(start_upload(&stranger).await.expect("push").status(), 401);

    let alice = signup_token(&a.url("/auth/tokens"), "alice").await;
    let context = context_tar();
    let digest = format!("sha256.{}", hex::encode(Sha256::digest(&context)));
    let announced = http
        .post(a.url("/v1/build-context"))
        .header("Authorization", format!("BEARER {alice}"))
        .json(&serde_json::json!({"size": context.len(), "digest": digest}))
        .send()
        .await
        .expect("announce");
    assert_eq!(announced.status(), 200);
    let location = announced.headers()["location"].to_str().expect("ascii");
    let path = location
        .strip_prefix(&format!("http://{}", a.address))
        .expect("an upload URL on node a");
    let put = |node: &TestApp| {
        http.put(node.url(path))
            .header("Content-Type", "application/octet-stream")
            .body(context.clone())
            .send()
    };
    let refused = put(&stranger).await.expect("upload");
    assert_eq!(refused.status(), 404);
    assert!(
        refused
            .text()
            .await
            .expect("body")
            .contains("unknown or has expired"),
        "a ticket of another secret"
    );
    let taken = put(&b).await.expect("upload");
    assert_eq!(
        taken.status(),
        200,
        "{}",
        taken.text().await.unwrap_or_default()
    );

    // The sign-up page served by a, posted to b (a load balancer's doing).
    let (cookie, form_token) = form_session(&a.url("/auth/tokens")).await;
    let sign_up = |node: &TestApp, user: &'static str| {
        http.post(node.url("/auth/tokens"))
            .header("cookie", cookie.clone())
            .form(&[("user", user), ("form_token", form_token.as_str())])
            .send()
    };
    let refused = sign_up(&stranger, "bob").await.expect("post");
    assert_eq!(refused.status(), 403);
    let page = sign_up(&b, "bob").await.expect("post");
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.expect("html").contains("kiln_"),
        "b shows bob's token"
    );
}

/// A gzipped tar of one small file, as `scs-build` uploads for `%files`.
fn context_tar() -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let text = b"shared by every node\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "home/alice/data.txt", &text[..])
        .expect("tar");
    tar.into_inner().expect("tar").finish().expect("gzip")
}

/// A worker's `/health` with the registry it pushes to checked: CNCF Distribution taking the
/// worker's credentials is healthy; a wrong password or a registry gone is a 503 saying so.
#[tokio::test]
async fn a_workers_health_checks_its_registry() {
    use tower::ServiceExt as _;

    let registry = Distribution::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&data.path().join("kiln.db"))
            .await
            .expect("store"),
    );
    let config = Config {
        data_dir: data.path().to_owned(),
        ..Config::default()
    };
    let user = registry.user;
    let health = |password: &str, url: String| {
        let probe = RegistryProbe::new(&url, Some(Credentials::new(user, password.to_owned())))
            .expect("probe");
        let ops = Ops::new(config.clone(), store.clone(), Arc::default()).with_registry(probe);
        async move {
            let answer = worker_router(Arc::new(ops))
                .oneshot(
                    axum::http::Request::get("/health")
                        .body(axum::body::Body::empty())
                        .expect("request"),
                )
                .await
                .expect("answer");
            let status = answer.status().as_u16();
            let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
                .await
                .expect("body");
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let url = format!("http://{}", registry.host);
    let (status, body) = health(registry.password, url.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = health("wrong", url.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("refuses kiln's credentials (401)"), "{body}");
    drop(registry);
    let (status, body) = health("any", url).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot be reached"), "{body}");
}
