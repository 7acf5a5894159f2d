//! What kiln refuses when a recipe is submitted, before any build: an anonymous `containerFile`
//! (401, saying how to get a token) while package requests stay anonymous; Dockerfiles and
//! definition files the builder would refuse (400, no build, no allowance spent); base images
//! on loopback, link-local or blocked addresses; build contexts that unpack into a bomb; another
//! user's build context; and request lists past their caps.
//!
//! No build runs here (no workers): what is checked is what kiln answers and records.

use crate::support::forms;

use std::io::Read as _;
use std::path::Path;

use crate::support::TestApp;
use crate::support::snapshot::Answers;
use base64::Engine as _;
use forms::signup_token;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const OPERATOR: &str = "operator-token";

/// kiln without build workers, its data in `data`, with an operator token, changed by
/// `configure`.
async fn start(data: &Path, configure: impl FnOnce(&mut kiln::config::Config)) -> TestApp {
    let data = data.to_owned();
    TestApp::start_with(move |config| {
        config.data_dir = data;
        config.build.workers = 0;
        // No worker ends a build here: nothing to wait for.
        config.api.wait_for_build_ms = 0;
        config.api.tokens = vec![OPERATOR.into()];
        configure(config);
    })
    .await
}

/// How many builds kiln has recorded, read from its database as an operator would.
async fn build_rows(data: &Path) -> i64 {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data.join("kiln.db"))
        .read_only(true);
    let mut connection = sqlx::ConnectOptions::connect(&options)
        .await
        .expect("the database opens");
    sqlx::query_scalar("SELECT count(*) FROM builds")
        .fetch_one(&mut connection)
        .await
        .expect("builds are counted")
}

/// Gets a library token from the `/auth/tokens` page, as a user would.
async fn token_for(app: &TestApp, user: &str) -> String {
    signup_token(&app.url("/auth/tokens"), user).await
}

fn base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A Wave container request for `dockerfile`, as Nextflow sends it, with `token` (if any) in
/// `Authorization` or in `towerAccessToken`.
async fn wave_containerfile(
    app: &TestApp,
    dockerfile: &str,
    bearer: Option<&str>,
    tower_token: Option<&str>,
) -> (u16, Value) {
    let body = json!({
        "towerAccessToken": tower_token,
        "containerFile": base64(dockerfile),
        "containerPlatform": "linux/amd64",
        "packages": null,
        "freeze": true,
    });
    post_json(app, "/v1alpha2/container", &body, bearer).await
}

async fn post_json(app: &TestApp, path: &str, body: &Value, bearer: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(app.url(path)).json(body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Submits a definition file to the remote builder as `singularity build --remote` does.
async fn remote_build(
    app: &TestApp,
    token: &str,
    definition: &str,
    context: Option<&str>,
) -> (u16, Value) {
    let mut body = json!({
        "definitionRaw": base64(definition),
        "libraryRef": "",
        "builderRequirements": {"arch": "amd64"},
        "workingDir": "/home/alice",
    });
    if let Some(digest) = context {
        body["contextDigest"] = json!(digest);
    }
    post_json(app, "/v1/build", &body, Some(token)).await
}

fn message(answer: &Value) -> &str {
    answer["message"]
        .as_str()
        .or_else(|| answer["error"]["message"].as_str())
        .unwrap_or_default()
}

#[tokio::test]
async fn recipes_need_a_token_and_packages_do_not() {
    let data = tempfile::tempdir().expect("temp dir");
    let app = start(data.path(), |_| {}).await;
    let dockerfile = format!(
        "FROM {}/kiln/base/debian:bookworm\nRUN echo hi\n",
        app.address
    );

    let (code, answer) = wave_containerfile(&app, &dockerfile, None, None).await;
    assert_eq!(code, 401, "{answer}");
    let mut answers = Answers::new();
    answers.redact(app.address.to_string(), "kiln");
    answers.json("a Dockerfile without a token", code, &answer, &[]);
    insta::assert_snapshot!(answers.render());
    let (code, _) = wave_containerfile(&app, &dockerfile, Some("kiln_not-a-token"), None).await;
    assert_eq!(code, 401, "an unknown token is no token");
    assert_eq!(build_rows(data.path()).await, 0);

    // An operator's token, as Nextflow sends it (towerAccessToken), and a library user's.
    let (code, answer) = wave_containerfile(&app, &dockerfile, None, Some(OPERATOR)).await;
    assert_eq!(code, 200, "{answer}");
    assert!(answer["buildId"].is_string(), "{answer}");
    let alice = token_for(&app, "alice").await;
    let other = format!("{dockerfile}RUN echo again\n");
    let (code, answer) = wave_containerfile(&app, &other, Some(&alice), None).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(build_rows(data.path()).await, 2);

    // Package requests run no user code: anonymous, as before.
    let packages = json!({
        "packages": {"type": "CONDA", "entries": ["samtools=1.21"], "channels": ["bioconda"]},
        "containerPlatform": "linux/amd64",
    });
    let (code, answer) = post_json(&app, "/v1alpha2/container", &packages, None).await;
    assert_eq!(code, 200, "{answer}");
    let (code, answer) = post_json(
        &app,
        "/api/v1/images",
        &json!({"packages": ["bcftools=1.21"]}),
        None,
    )
    .await;
    assert_eq!(code, 200, "{answer}");

    // An operator who opens recipes to everyone.
    let open_data = tempfile::tempdir().expect("temp dir");
    let open = start(open_data.path(), |config| {
        config.api.anonymous_recipes = true
    })
    .await;
    let dockerfile = format!("FROM {}/kiln/base/debian:bookworm\n", open.address);
    let (code, answer) = wave_containerfile(&open, &dockerfile, None, None).await;
    assert_eq!(code, 200, "{answer}");
}

#[tokio::test]
async fn recipes_the_builder_would_refuse_cost_nothing() {
    let data = tempfile::tempdir().expect("temp dir");
    let app = start(data.path(), |config| config.api.user_builds_per_day = 1).await;
    let kiln_base = format!("{}/kiln/base/debian:bookworm", app.address);

    // 64 KiB, the most a `containerFile` may be, all on one line: one byte more than buildah
    // reads a line.
    let long_line = format!("FROM {}", "a".repeat(64 * 1024 - 5));
    let mut answers = Answers::new();
    answers.redact(app.address.to_string(), "kiln");
    for (dockerfile, what) in [
        (format!("FROM {kiln_base}\nRUN echo \0\n"), "a NUL byte"),
        (long_line, "a line too long"),
        ("RUN id\n".to_owned(), "no FROM"),
        (
            format!("FROM {kiln_base}\nRUNN id\n"),
            "a misspelt instruction",
        ),
        ("FROM ${BASE}\n".to_owned(), "an argument without a default"),
        ("# nothing\n".to_owned(), "no instructions"),
    ] {
        let (code, answer) = wave_containerfile(&app, &dockerfile, None, Some(OPERATOR)).await;
        assert_eq!(code, 400, "{answer}");
        answers.json(&format!("a Dockerfile with {what}"), code, &answer, &[]);
    }

    let alice = token_for(&app, "alice").await;
    let header = format!("Bootstrap: docker\nFrom: {kiln_base}\n");
    let long_post = format!("{header}%post\n    echo {}\n", "x".repeat(70_000));
    for (definition, what) in [
        (
            format!("{header}%setup\n    touch /x\n"),
            "a %setup section",
        ),
        (format!("{header}%post\n    echo \0\n"), "a NUL byte"),
        (
            format!("{header}%post\n    true\nBootstrap: docker\nFrom: x\n"),
            "two stages",
        ),
        (long_post, "a line too long"),
        (
            "Bootstrap: library\nFrom: alpine\n".to_owned(),
            "the library agent",
        ),
        ("Bootstrap: docker\n".to_owned(), "no From"),
        (
            format!("{header}%files\n    data /data\n"),
            "files but no context",
        ),
    ] {
        let (code, answer) = remote_build(&app, &alice, &definition, None).await;
        assert_eq!(code, 400, "{answer}");
        answers.json(&format!("a definition with {what}"), code, &answer, &[]);
    }
    insta::assert_snapshot!(answers.render());
    assert_eq!(
        build_rows(data.path()).await,
        0,
        "no refused recipe left a build"
    );
    // None of them took alice's one build of the day.
    let (code, answer) = remote_build(&app, &alice, &header, None).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(build_rows(data.path()).await, 1);
}

#[tokio::test]
async fn base_images_on_private_addresses_are_refused() {
    let data = tempfile::tempdir().expect("temp dir");
    let app = start(data.path(), |config| {
        config.build.blocked_networks = vec!["198.51.100.0/24".parse().expect("network")];
        config.insecure_registries = vec!["127.0.0.1:5999".into()];
    })
    .await;
    let alice = token_for(&app, "alice").await;
    let kiln_base = format!("{}/kiln/base/debian:bookworm", app.address);
    for (image, host, why) in [
        (
            "127.0.0.1:5000/base:1",
            "127.0.0.1:5000",
            "is 127.0.0.1, a loopback address",
        ),
        ("127.8.9.10/base", "127.8.9.10", "a loopback address"),
        (
            "localhost:5000/base",
            "localhost:5000",
            "a loopback address",
        ),
        (
            "[::1]:5000/base",
            "[::1]:5000",
            "is ::1, a loopback address",
        ),
        (
            "169.254.169.254/latest/meta-data",
            "169.254.169.254",
            "a link-local address",
        ),
        (
            "0.0.0.0:5000/base",
            "0.0.0.0:5000",
            "an unspecified address",
        ),
        (
            "198.51.100.7/base",
            "198.51.100.7",
            "in the blocked network 198.51.100.0/24",
        ),
    ] {
        // A definition's `From:`.
        let definition = format!("Bootstrap: docker\nFrom: {image}\n");
        let (code, answer) = remote_build(&app, &alice, &definition, None).await;
        assert_eq!(code, 400, "{image}: {answer}");
        let text = message(&answer);
        assert!(
            text.contains(&format!("is on {host}, which")) && text.contains(why),
            "{image}: {text}"
        );
        assert!(text.contains("insecure_registries"), "{text}");
        // A Dockerfile's second stage, and a `COPY --from` image.
        for dockerfile in [
            format!("FROM {kiln_base} AS first\nRUN true\nFROM {image}\n"),
            format!("FROM {kiln_base}\nCOPY --from={image} /a /a\n"),
        ] {
            let (code, answer) = wave_containerfile(&app, &dockerfile, Some(OPERATOR), None).await;
            assert_eq!(code, 400, "{dockerfile}: {answer}");
            let text = message(&answer);
            assert!(text.contains(&format!("`{image}` at line")), "{text}");
            assert!(text.contains(why), "{text}");
        }
    }
    let unknown = "Bootstrap: docker\nFrom: no-such-registry.invalid/base\n";
    let (code, answer) = remote_build(&app, &alice, unknown, None).await;
    assert_eq!(code, 400, "{answer}");
    assert!(
        message(&answer).contains("is on no-such-registry.invalid, which does not resolve"),
        "{answer}"
    );
    assert_eq!(build_rows(data.path()).await, 0);

    // kiln's own registry, and a loopback registry the operator listed, are fine.
    for image in [
        kiln_base.as_str(),
        "127.0.0.1:5999/base:1",
        "docker://127.0.0.1:5999/base",
    ] {
        let definition = format!("Bootstrap: docker\nFrom: {image}\n");
        let (code, answer) = remote_build(&app, &alice, &definition, None).await;
        assert_eq!(code, 200, "{image}: {answer}");
    }
    let dockerfile = format!("FROM {kiln_base} AS a\nFROM a\nFROM 127.0.0.1:5999/base\n");
    let (code, answer) = wave_containerfile(&app, &dockerfile, Some(OPERATOR), None).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(build_rows(data.path()).await, 4);
}

/// A gzip'd tar holding one file of `size` zero bytes, and its digest as clients send it.
fn zeros_context(size: u64) -> (Vec<u8>, String) {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(
        &mut header,
        "home/alice/zeros",
        std::io::repeat(0).take(size),
    )
    .expect("tar");
    let bytes = tar.into_inner().expect("tar").finish().expect("gzip");
    let digest = format!("sha256.{}", hex::encode(Sha256::digest(&bytes)));
    (bytes, digest)
}

/// A small, honest context: one text file.
fn small_context(text: &str) -> (Vec<u8>, String) {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "home/alice/data.txt", text.as_bytes())
        .expect("tar");
    let bytes = tar.into_inner().expect("tar").finish().expect("gzip");
    let digest = format!("sha256.{}", hex::encode(Sha256::digest(&bytes)));
    (bytes, digest)
}

/// Announces a context as scs-build does; the upload URL, or `None` when kiln says it has it.
async fn announce(app: &TestApp, token: &str, bytes: &[u8], digest: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .post(app.url("/v1/build-context"))
        .header("Authorization", format!("BEARER {token}"))
        .json(&json!({"size": bytes.len(), "digest": digest}))
        .send()
        .await
        .expect("announce");
    assert_eq!(response.status(), 200);
    response
        .headers()
        .get("location")
        .map(|value| value.to_str().expect("location").to_owned())
}

/// Announces and uploads a context; the upload's status and answer.
async fn upload(app: &TestApp, token: &str, bytes: Vec<u8>, digest: &str) -> (u16, Value) {
    let location = announce(app, token, &bytes, digest)
        .await
        .expect("an upload URL");
    let response = reqwest::Client::new()
        .put(location)
        .header("Content-Type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files_under(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_context_bomb_is_refused_and_leaves_nothing() {
    let data = tempfile::tempdir().expect("temp dir");
    let app = start(data.path(), |_| {}).await;
    let alice = token_for(&app, "alice").await;
    let (bomb, digest) = tokio::task::spawn_blocking(|| zeros_context(1100 << 20))
        .await
        .expect("bomb made");
    assert!(bomb.len() < 1_200_000, "a 1 MB bomb: {} bytes", bomb.len());
    let (code, answer) = upload(&app, &alice, bomb, &digest).await;
    assert_eq!(code, 413, "{answer}");
    let text = message(&answer);
    assert!(text.contains("decompression bomb"), "{text}");
    assert!(text.contains("api.context_max_expansion"), "{text}");
    let kept = files_under(&data.path().join("build-contexts"));
    assert!(kept.is_empty(), "the bomb left {kept:?}");
    let definition = format!(
        "Bootstrap: docker\nFrom: {}/kiln/base/debian:bookworm\n%files\n    zeros /zeros\n",
        app.address
    );
    let (code, answer) = remote_build(&app, &alice, &definition, Some(&digest)).await;
    assert_eq!(code, 400, "{answer}");
    assert!(
        message(&answer).contains("no such build context"),
        "{answer}"
    );

    // The cap on unpacked bytes holds even for contexts that compress modestly.
    let strict_data = tempfile::tempdir().expect("temp dir");
    let strict = start(strict_data.path(), |config| {
        config.api.context_max_unpacked_bytes = 1 << 20;
        config.api.context_max_expansion = 1 << 20;
    })
    .await;
    let bob = token_for(&strict, "bob").await;
    let (big, digest) = zeros_context(2 << 20);
    let (code, answer) = upload(&strict, &bob, big, &digest).await;
    assert_eq!(code, 413, "{answer}");
    assert!(
        message(&answer).contains("api.context_max_unpacked_bytes"),
        "{answer}"
    );
    assert!(files_under(&strict_data.path().join("build-contexts")).is_empty());
}

#[tokio::test]
async fn only_the_owner_deletes_a_context() {
    let data = tempfile::tempdir().expect("temp dir");
    let app = start(data.path(), |_| {}).await;
    let alice = token_for(&app, "alice").await;
    let bob = token_for(&app, "bob").await;
    let (bytes, digest) = small_context("alice's data\n");
    let (code, answer) = upload(&app, &alice, bytes.clone(), &digest).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        announce(&app, &alice, &bytes, &digest).await,
        None,
        "alice has it"
    );
    // Bob does not see alice's context: he would upload his own.
    assert!(announce(&app, &bob, &bytes, &digest).await.is_some());

    let delete = |token: String| {
        let url = app.url(&format!("/v1/build-context/{digest}"));
        async move {
            let response = reqwest::Client::new()
                .delete(url)
                .header("Authorization", format!("BEARER {token}"))
                .send()
                .await
                .expect("delete");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (code, answer) = delete(bob.clone()).await;
    assert_eq!(code, 404, "{answer}");
    assert!(message(&answer).contains("no build context"), "{answer}");
    assert_eq!(
        announce(&app, &alice, &bytes, &digest).await,
        None,
        "alice's context is still there"
    );
    let definition = format!(
        "Bootstrap: docker\nFrom: {}/kiln/base/debian:bookworm\n%files\n    data.txt /data.txt\n",
        app.address
    );
    let (code, answer) = remote_build(&app, &alice, &definition, Some(&digest)).await;
    assert_eq!(code, 200, "{answer}");
    let (code, answer) = remote_build(&app, &bob, &definition, Some(&digest)).await;
    assert_eq!(code, 400, "bob cannot build from alice's context: {answer}");

    let (code, _) = delete(alice.clone()).await;
    assert_eq!(code, 200);
    assert!(
        announce(&app, &alice, &bytes, &digest).await.is_some(),
        "gone"
    );
}

#[tokio::test]
async fn request_lists_are_capped() {
    let data = tempfile::tempdir().expect("temp dir");
    let app = start(data.path(), |_| {}).await;
    let mut answers = Answers::new();
    let channels: Vec<String> = (0..17).map(|n| format!("channel{n}")).collect();
    let (code, answer) = post_json(
        &app,
        "/api/v1/images",
        &json!({"packages": ["samtools"], "channels": channels}),
        None,
    )
    .await;
    assert_eq!(code, 400, "{answer}");
    answers.json("17 channels", code, &answer, &[]);
    let wave = json!({
        "packages": {"type": "CONDA", "entries": ["samtools"], "channels": channels},
    });
    let (code, answer) = post_json(&app, "/v1alpha2/container", &wave, None).await;
    assert_eq!(code, 400, "{answer}");
    answers.json("17 Wave channels", code, &answer, &[]);

    let entries: Vec<String> = (0..201).map(|n| format!("pkg{n}")).collect();
    let (code, answer) =
        post_json(&app, "/api/v1/images", &json!({"packages": entries}), None).await;
    assert_eq!(code, 400, "{answer}");
    answers.json("201 packages", code, &answer, &[]);

    let platforms = vec!["linux/amd64"; 9];
    let (code, answer) = post_json(
        &app,
        "/api/v1/images",
        &json!({"packages": ["samtools"], "platforms": platforms}),
        None,
    )
    .await;
    assert_eq!(code, 400, "{answer}");
    answers.json("9 platforms", code, &answer, &[]);
    let wave = json!({
        "packages": {"type": "CONDA", "entries": ["samtools"]},
        "containerPlatform": platforms.join(","),
    });
    let (code, answer) = post_json(&app, "/v1alpha2/container", &wave, None).await;
    assert_eq!(code, 400, "{answer}");
    answers.json("9 Wave platforms", code, &answer, &[]);
    assert_eq!(build_rows(data.path()).await, 0);
    insta::assert_snapshot!(answers.render());
}
