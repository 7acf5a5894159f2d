//! The Wave-compatible API as Nextflow's Wave client uses it: the exact bodies it sends (nulls
//! included), its readiness logic (requestId → status until DONE), every field it reads; plus
//! a containerFile built with buildah (with a token), 200 identical requests at once, the rate
//! limit, errors, kiln's own API with its log stream, `/metrics`, `/service-info` and
//! `/openapi.json`; instant answers for quick builds, memory hits that forget deleted images, and
//! the API answering while two builds run.

use crate::support::{bench_channel, conda_channel, debian_base};

use std::time::{Duration, Instant};

use crate::support::snapshot::Answers;
use crate::support::wave::nextflow_body;
use crate::support::{PUSHER, TestApp};
use base64::Engine as _;
use conda_channel::{CHANNEL_NAME, CondaChannel};
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient};
use serde_json::{Value, json};

const BASE: &str = "kiln/base/debian";
const TOKEN: &str = "nextflow-test-token";

/// kiln with the local channel, the Debian base in its registry, a token, and an allowance of
/// `allowance` anonymous builds. A request starting a build is answered at once
/// (`api.wait_for_build_ms = 0`), as a long build is.
async fn start(server_url: &str, allowance: u32) -> TestApp {
    start_waiting(server_url, allowance, 0).await
}

/// [`start`], with requests that start a build waiting up to `wait_ms` for it.
async fn start_waiting(server_url: &str, allowance: u32, wait_ms: u64) -> TestApp {
    let channel = server_url.to_owned();
    let app = TestApp::start_with(move |config| {
        config.api.wait_for_build_ms = wait_ms;
        let base = format!("{}/{BASE}:bookworm", config.registry);
        config
            .channel_mirrors
            .insert(CHANNEL_NAME.to_owned(), channel);
        config.base.conda.image = Some(base.parse().expect("reference"));
        config.base.python.image = Some(base.parse().expect("reference"));
        config.base.python.python = None;
        config.api.tokens = vec![TOKEN.into()];
        config.api.anonymous_builds_per_day = allowance;
    })
    .await;
    let client = RegistryClient::new(
        &app.address.to_string(),
        Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1)),
        &[],
    )
    .expect("client");
    debian_base::push_debian_python_base(&client, BASE).await;
    app
}

async fn post(app: &TestApp, body: &Value, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(app.url("/v1alpha2/container"))
        .header(
            "Traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

async fn get_json(app: &TestApp, path: &str) -> (u16, Value) {
    let response = reqwest::get(app.url(path)).await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Nextflow's `isContainerReady`: ready at once when `succeeded`, else poll the request's
/// status until DONE; returns the last status, checked the way Nextflow parses it.
async fn until_ready(app: &TestApp, answer: &Value) -> Value {
    let id = answer["requestId"].as_str().expect("requestId");
    if answer["succeeded"] == json!(true) {
        let (code, status) = get_json(app, &format!("/v1alpha2/container/{id}/status")).await;
        assert_eq!(code, 200);
        return status;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (code, status) = get_json(app, &format!("/v1alpha2/container/{id}/status")).await;
        assert_eq!(code, 200, "{status}");
        let state = status["status"].as_str().expect("status");
        assert!(
            ["PENDING", "BUILDING", "SCANNING", "DONE"].contains(&state),
            "{status}"
        );
        chrono::DateTime::parse_from_rfc3339(
            status["creationTime"].as_str().expect("creationTime"),
        )
        .expect("creationTime is an ISO instant");
        if state == "DONE" {
            let duration = status["duration"].as_str().expect("duration");
            let (whole, fraction) = duration.split_once('.').expect("decimal seconds");
            assert!(
                whole.parse::<u64>().is_ok() && fraction.len() == 9,
                "{duration}"
            );
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the build did not finish: {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nextflow_requests_are_answered_and_built() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    let app = start(&server.url, 3).await;
    let host = app.address.to_string();
    let mut answers = Answers::new();
    answers.redact(host.clone(), "kiln");
    answers.redact(server.url.clone(), "channel");

    // freeze, docker: a new build; Nextflow polls until DONE.
    let (code, answer) = post(&app, &nextflow_body(json!({})), None).await;
    assert_eq!(code, 200, "{answer}");
    let target = answer["targetImage"]
        .as_str()
        .expect("targetImage")
        .to_owned();
    answers.redact(&target, "image");
    assert!(
        target.starts_with(&format!("{host}/library/kiln-hello:2.0--")),
        "{target}"
    );
    assert_eq!(answer["containerImage"], answer["targetImage"]);
    assert_eq!(answer["cached"], json!(false));
    assert_eq!(answer["freeze"], json!(true));
    assert!(
        answer.get("succeeded").is_none(),
        "no nulls, and nothing to report yet: {answer}"
    );
    assert!(
        answer.get("containerToken").is_none(),
        "no ephemeral tokens: {answer}"
    );
    let build_id = answer["buildId"].as_str().expect("buildId").to_owned();
    assert!(
        build_id.starts_with("bd-") && build_id.ends_with("_1"),
        "{build_id}"
    );
    answers.redact(&build_id, "build id");
    answers.json("a new build", code, &answer, &["/requestId"]);
    let status = until_ready(&app, &answer).await;
    assert_eq!(status["succeeded"], json!(true), "{status}");
    assert_eq!(status["buildId"], json!(build_id));
    let times = ["/id", "/creationTime", "/duration"];
    answers.json("its status when done", 200, &status, &times);

    // The older build endpoints Nextflow and scripts use.
    let (code, legacy) = get_json(&app, &format!("/v1alpha1/builds/{build_id}/status")).await;
    assert_eq!(code, 200);
    answers.json(
        "its legacy status",
        code,
        &legacy,
        &["/startTime", "/duration"],
    );
    assert_eq!(legacy["status"], json!("COMPLETED"));
    assert_eq!(legacy["succeeded"], json!(true));
    assert!(legacy["duration"].as_f64().is_some(), "{legacy}");
    chrono::DateTime::parse_from_rfc3339(legacy["startTime"].as_str().expect("startTime"))
        .expect("ISO startTime");
    let log = reqwest::get(app.url(&format!("/v1alpha1/builds/{build_id}/logs")))
        .await
        .expect("logs");
    assert_eq!(log.status(), 200);
    assert!(log.text().await.expect("text").contains("pushed"));
    let lock = reqwest::get(app.url(&format!("/v1alpha1/builds/{build_id}/condalock")))
        .await
        .expect("lock")
        .text()
        .await
        .expect("text");
    assert!(
        lock.contains("@EXPLICIT") && lock.contains("kiln-hello-2.0"),
        "{lock}"
    );
    let (code, record) = get_json(&app, &format!("/v1alpha1/builds/{build_id}")).await;
    assert_eq!(record["targetImage"], json!(target));
    assert_eq!(record["format"], json!("DOCKER"));
    let record_volatile = ["/startTime", "/duration", "/digest"];
    answers.json("its build record", code, &record, &record_volatile);

    // The same request without freeze: the image exists, answered at once.
    let (code, again) = post(&app, &nextflow_body(json!({"freeze": false})), None).await;
    assert_eq!(code, 200);
    assert_eq!(again["targetImage"], json!(target));
    assert_eq!(again["cached"], json!(true));
    assert_eq!(again["succeeded"], json!(true));
    assert_eq!(until_ready(&app, &again).await["status"], json!("DONE"));

    // Singularity: an oras:// image.
    let (code, sif) = post(&app, &nextflow_body(json!({"format": "sif"})), None).await;
    assert_eq!(code, 200, "{sif}");
    assert!(
        sif["targetImage"]
            .as_str()
            .expect("targetImage")
            .starts_with(&format!("oras://{host}/library/kiln-hello:2.0--")),
        "{sif}"
    );
    assert_eq!(until_ready(&app, &sif).await["succeeded"], json!(true));

    // An nf-core module: a base64 environment.yml with pip dependencies, and a Platform token
    // (which also means no rate limit).
    let environment = format!(
        "channels:\n  - {CHANNEL_NAME}\ndependencies:\n  - kiln-hello=2.0\n  - pip:\n    - six==1.16.0\n"
    );
    let body = nextflow_body(json!({
        "towerAccessToken": TOKEN,
        "packages": {
            "entries": null,
            "channels": null,
            "environment": base64::engine::general_purpose::STANDARD.encode(environment),
        }
    }));
    let (code, module) = post(&app, &body, Some(TOKEN)).await;
    assert_eq!(code, 200, "{module}");
    assert!(
        module["targetImage"]
            .as_str()
            .expect("target")
            .contains("/library/kiln-hello_pip_six:"),
        "{module}"
    );
    assert_eq!(until_ready(&app, &module).await["succeeded"], json!(true));

    // pip: entries for arm64, on the Python base.
    let body = nextflow_body(json!({
        "containerPlatform": "linux/arm64",
        "packages": {"entries": ["pip:idna==3.10"], "channels": null}
    }));
    let (code, pip) = post(&app, &body, Some(TOKEN)).await;
    assert_eq!(code, 200, "{pip}");
    assert_eq!(until_ready(&app, &pip).await["succeeded"], json!(true));

    // A container directive: passed through, nothing to build.
    let body = nextflow_body(json!({
        "containerImage": "quay.io/biocontainers/samtools:1.21--h50ea8bc_0",
        "packages": null
    }));
    let (code, image) = post(&app, &body, None).await;
    assert_eq!(code, 200, "{image}");
    assert_eq!(
        image["targetImage"],
        json!("quay.io/biocontainers/samtools:1.21--h50ea8bc_0")
    );
    assert_eq!(image["succeeded"], json!(true));
    assert!(image.get("buildId").is_none(), "{image}");
    assert_eq!(until_ready(&app, &image).await["status"], json!("DONE"));

    // A failing build: DONE, not succeeded, with a reason and a page to read.
    let body = nextflow_body(json!({"packages": {"entries": ["kiln-postlink"]}}));
    let (code, failing) = post(&app, &body, Some(TOKEN)).await;
    assert_eq!(code, 200, "{failing}");
    let status = until_ready(&app, &failing).await;
    assert_eq!(status["succeeded"], json!(false), "{status}");
    answers.redact(
        status["buildId"].as_str().expect("buildId"),
        "failed build id",
    );
    answers.json("a failed build's status", 200, &status, &times);
    let details = status["detailsUri"].as_str().expect("detailsUri");
    let page = reqwest::get(details).await.expect("details page");
    assert_eq!(page.status(), 200, "{details}");

    // Anonymous clients have an allowance of new builds (3 here: kiln-hello docker, sif,
    // kiln-postlink... the postlink one was sent with a token, so one is left).
    let body = nextflow_body(json!({"packages": {"entries": ["kiln-libgreet"]}}));
    let (code, _) = post(&app, &body, None).await;
    assert_eq!(code, 200);
    let body = nextflow_body(json!({"packages": {"entries": ["kiln-hello=1.0"]}}));
    let (code, limited) = post(&app, &body, None).await;
    assert_eq!(code, 429, "{limited}");
    // The wait counts down from the first build of the day, minutes ago.
    let wait = limited["message"]
        .as_str()
        .and_then(|message| message.split("allowed again in ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("the answer says how long to wait: {limited}"));
    answers.redact(format!("in {wait} minutes"), "in minutes");
    answers.json("over the anonymous allowance", code, &limited, &[]);
    let (code, _) = post(&app, &body, Some(TOKEN)).await;
    assert_eq!(code, 200, "a token lifts the limit");

    // Bad requests name the field; unknown ids are 404.
    for (changes, field) in [
        (
            json!({"containerPlatform": "linux/s390x"}),
            "containerPlatform",
        ),
        (
            json!({"packages": {"entries": ["numpy;rm -rf /"]}}),
            "packages",
        ),
        (
            json!({"containerFile": "RlJPTSBzY3JhdGNo"}),
            "containerFile",
        ),
        (json!({"packages": {"type": "CRAN"}}), "packages.type"),
    ] {
        let (code, error) = post(&app, &nextflow_body(changes), None).await;
        assert_eq!(code, 400, "{error}");
        answers.json(&format!("a bad {field}"), code, &error, &[]);
    }
    let (code, missing) = get_json(&app, "/v1alpha2/container/000000000000/status").await;
    assert_eq!(code, 404);
    answers.json("an unknown request", code, &missing, &[]);
    let (code, missing) = get_json(&app, "/v1alpha1/builds/bd-0000000000000000_1/status").await;
    assert_eq!(code, 404);
    answers.json("an unknown build", code, &missing, &[]);

    // Operations: service info and metrics.
    let (_, info) = get_json(&app, "/service-info").await;
    assert!(info["serviceInfo"]["version"].is_string(), "{info}");
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("kiln_container_requests_total{result=\"hit\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kiln_builds_total{outcome=\"failed\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("kiln_rate_limited_total 1"), "{metrics}");
    insta::assert_snapshot!(answers.render());
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_requests_at_once_share_one_build() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    let app = start(&server.url, 1).await;
    let body = nextflow_body(json!({"packages": {"entries": ["kiln-libgreet=1.0"]}}));
    let answers = futures_util::future::join_all((0..200).map(|_| post(&app, &body, None))).await;
    let mut targets = std::collections::BTreeSet::new();
    let mut builds = std::collections::BTreeSet::new();
    for (code, answer) in &answers {
        assert_eq!(*code, 200, "{answer}");
        targets.insert(answer["targetImage"].as_str().expect("target").to_owned());
        builds.insert(answer["buildId"].as_str().expect("buildId").to_owned());
    }
    assert_eq!(targets.len(), 1, "one name: {targets:?}");
    assert_eq!(builds.len(), 1, "one build: {builds:?}");
    let status = until_ready(&app, &answers[0].1).await;
    assert_eq!(status["succeeded"], json!(true), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_containerfile_is_built_with_buildah() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    let app = start(&server.url, 5).await;
    let dockerfile = format!(
        "FROM {}/{BASE}:bookworm\nRUN echo built-by-kiln > /kiln.txt\n",
        app.address
    );
    let body = nextflow_body(json!({
        "packages": null,
        "containerFile": base64::engine::general_purpose::STANDARD.encode(dockerfile),
    }));
    // A Dockerfile runs its commands on kiln: not without a token.
    let (code, answer) = post(&app, &body, None).await;
    assert_eq!(code, 401, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("/auth/tokens")),
        "{answer}"
    );
    let (code, answer) = post(&app, &body, Some(TOKEN)).await;
    assert_eq!(code, 200, "{answer}");
    let status = until_ready(&app, &answer).await;
    assert_eq!(status["succeeded"], json!(true), "{status}");
    let build_id = answer["buildId"].as_str().expect("buildId");
    let log = reqwest::get(app.url(&format!("/v1alpha1/builds/{build_id}/logs")))
        .await
        .expect("logs")
        .text()
        .await
        .expect("text");
    assert!(
        log.contains("RUN echo built-by-kiln"),
        "buildah's steps are logged: {log}"
    );
    let target = answer["targetImage"].as_str().expect("target");
    let inspected = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{target}"))
        .output()
        .expect("skopeo");
    assert!(
        inspected.status.success(),
        "{}",
        String::from_utf8_lossy(&inspected.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kilns_own_api_streams_the_build_log() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    let app = start(&server.url, 5).await;
    let response = reqwest::Client::new()
        .post(app.url("/api/v1/images"))
        .json(&json!({"packages": ["kiln-hello=1.0"], "channels": [CHANNEL_NAME], "platforms": ["linux/arm64"]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(answer["cached"], json!(false));
    let id = answer["build"]["id"].as_str().expect("build id").to_owned();
    let mut stream = reqwest::get(app.url(&format!("/api/v1/builds/{id}/log")))
        .await
        .expect("log stream");
    assert_eq!(
        stream.headers()["content-type"].to_str().expect("type"),
        "text/event-stream"
    );
    let mut text = String::new();
    while let Some(chunk) = stream.chunk().await.expect("chunk") {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.contains("event: done") {
            break;
        }
    }
    assert!(text.contains("event: log"), "{text}");
    assert!(text.contains("solved"), "{text}");
    assert!(text.contains("\"succeeded\":true"), "{text}");
    let (code, record) = get_json(&app, &format!("/api/v1/builds/{id}")).await;
    assert_eq!(code, 200);
    assert_eq!(record["status"], json!("DONE"));
    let response = reqwest::Client::new()
        .post(app.url("/api/v1/images"))
        .json(&json!({"packages": ["kiln-hello=1.0"], "channels": [CHANNEL_NAME], "platforms": ["linux/arm64"]}))
        .send()
        .await
        .expect("POST");
    let again: Value = response.json().await.expect("JSON");
    assert_eq!(again["cached"], json!(true), "{again}");
    let (code, bad) = {
        let response = reqwest::Client::new()
            .post(app.url("/api/v1/images"))
            .json(&json!({"packages": ["samtools=1.21"], "platforms": ["windows/amd64"]}))
            .send()
            .await
            .expect("POST");
        (
            response.status().as_u16(),
            response.json::<Value>().await.expect("JSON"),
        )
    };
    assert_eq!(code, 400, "{bad}");
    let (code, document) = get_json(&app, "/openapi.json").await;
    assert_eq!(code, 200);
    assert!(
        document["paths"]["/api/v1/images"]["post"].is_object(),
        "{document}"
    );
}

/// The cache is kiln's word, not the registry's: a manifest pushed at the deterministic tag of
/// a request kiln has not built yet (the name is known from `dryRun`) is never served as
/// `cached: true`. A registry user cannot push there at all; a tag written behind kiln's back
/// (here by an operator) is a miss, and kiln builds the image over it.
#[tokio::test(flavor = "multi_thread")]
async fn a_tag_kiln_did_not_build_is_not_served_as_cached() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    let app = start(&server.url, 3).await;
    let (code, dry) = post(&app, &nextflow_body(json!({"dryRun": true})), None).await;
    assert_eq!(code, 200, "{dry}");
    let target = dry["targetImage"].as_str().expect("targetImage").to_owned();
    let (repository, tag) = target
        .split_once('/')
        .and_then(|(_, rest)| rest.rsplit_once(':'))
        .expect("host/repository:tag");

    // A poisoned image: a config and a layer of the attacker's choosing.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let manifest = |config_digest: &str| {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [],
        })
        .to_string()
    };
    let config_digest = kiln::registry::client::sha256_digest(config);
    let http = reqwest::Client::new();
    let user = crate::support::REGISTRY_USER;
    for path in [
        format!("/v2/{repository}/blobs/uploads/?digest={config_digest}"),
        format!("/v2/{repository}/manifests/{tag}"),
    ] {
        let body = if path.contains("manifests") {
            manifest(&config_digest).into_bytes()
        } else {
            config.to_vec()
        };
        let refused = http
            .request(
                if path.contains("manifests") {
                    reqwest::Method::PUT
                } else {
                    reqwest::Method::POST
                },
                app.url(&path),
            )
            .basic_auth(user.0, Some(user.1))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
            .await
            .expect("push");
        assert_eq!(refused.status(), 403, "{path}");
        let error: Value = refused.json().await.expect("json");
        assert_eq!(error["errors"][0]["code"], "DENIED", "{error}");
    }

    let operator = RegistryClient::new(
        &app.address.to_string(),
        Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1)),
        &[],
    )
    .expect("client");
    operator
        .push_blob_bytes(repository, bytes::Bytes::from_static(config), None)
        .await
        .expect("config pushed");
    let poisoned = operator
        .push_manifest(
            repository,
            tag,
            bytes::Bytes::from(manifest(&config_digest)),
            "application/vnd.oci.image.manifest.v1+json",
        )
        .await
        .expect("poisoned manifest pushed");

    let (code, answer) = post(&app, &nextflow_body(json!({})), None).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["targetImage"], json!(target));
    assert_eq!(answer["cached"], json!(false), "{answer}");
    let status = until_ready(&app, &answer).await;
    assert_eq!(status["succeeded"], json!(true), "{status}");
    let built = operator
        .tag_digest(repository, tag)
        .await
        .expect("HEAD")
        .expect("the tag exists");
    assert_ne!(built, poisoned, "kiln's build replaced the poisoned tag");

    let (_, again) = post(&app, &nextflow_body(json!({})), None).await;
    assert_eq!(again["cached"], json!(true), "{again}");
}

/// A request that starts a build which ends within `api.wait_for_build_ms` is answered as a
/// cached image (`succeeded: true`), so Nextflow starts without polling, and its status is
/// there at once. Known images are then answered from memory until the tag goes: an image
/// deleted from the registry is built again, not served from what kiln remembered.
#[tokio::test(flavor = "multi_thread")]
async fn quick_builds_are_answered_ready_and_deleted_images_are_built_again() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    // Far longer than these builds take: the answer waits for the build, whatever the machine.
    let app = start_waiting(&server.url, 5, 300_000).await;
    let body = nextflow_body(json!({"freeze": false, "packages": {"entries": ["kiln-hello=1.0"]}}));

    let (code, answer) = post(&app, &body, None).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["succeeded"], json!(true), "{answer}");
    assert_eq!(answer["cached"], json!(true), "{answer}");
    let first_build = answer["buildId"].as_str().expect("buildId").to_owned();
    assert!(first_build.ends_with("_1"), "{first_build}");
    // Polled at once, before the record may be in the database.
    let id = answer["requestId"].as_str().expect("requestId");
    let (code, status) = get_json(&app, &format!("/v1alpha2/container/{id}/status")).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["status"], json!("DONE"), "{status}");
    assert_eq!(status["succeeded"], json!(true), "{status}");
    let (code, record) = get_json(&app, &format!("/v1alpha2/container/{id}")).await;
    assert_eq!(code, 200, "{record}");

    // Asked again (the second answer comes from memory): the same image, the same answer.
    for _ in 0..2 {
        let (code, again) = post(&app, &body, None).await;
        assert_eq!(code, 200, "{again}");
        assert_eq!(again, answer, "a hit answers as the instant answer did");
    }

    // The operator deletes the tag: the next request builds the image again.
    let target = answer["targetImage"].as_str().expect("targetImage");
    let (repository, tag) = target
        .split_once('/')
        .and_then(|(_, rest)| rest.rsplit_once(':'))
        .expect("host/repository:tag");
    let deleted = reqwest::Client::new()
        .delete(app.url(&format!("/v2/{repository}/manifests/{tag}")))
        .basic_auth(PUSHER.0, Some(PUSHER.1))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 202);
    let (code, rebuilt) = post(&app, &body, None).await;
    assert_eq!(code, 200, "{rebuilt}");
    let second_build = rebuilt["buildId"].as_str().expect("buildId");
    assert!(
        second_build.ends_with("_2"),
        "built again, not served from memory: {rebuilt}"
    );
    assert_eq!(rebuilt["succeeded"], json!(true), "{rebuilt}");

    // kiln's own API: built and done in one answer, and not `cached` (it did not exist).
    let response = reqwest::Client::new()
        .post(app.url("/api/v1/images"))
        .json(&json!({"packages": ["kiln-libgreet=1.0"], "channels": [CHANNEL_NAME]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(answer["cached"], json!(false), "{answer}");
    assert_eq!(answer["build"]["status"], json!("DONE"), "{answer}");
    assert_eq!(answer["build"]["succeeded"], json!(true), "{answer}");
}

/// With two package builds of large packages running (their solves, installs and layer writing
/// under way), `GET /health` and the registry's `GET /v2/` are still answered: asked from a
/// thread of their own, with a timeout a runtime blocked by the builds would exceed, while both
/// builds are seen BUILDING before and after each answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_registry_answer_while_two_builds_run() {
    // Two environments of four packages, 24 MB each: seconds of work per build.
    let names: Vec<String> = (0..8).map(|i| format!("busy-{i}")).collect();
    let generated = tokio::task::spawn_blocking(move || {
        bench_channel::Channel::generate(&names, 24 << 20).expect("channel generated")
    })
    .await
    .expect("generating the channel");
    let channel_url = bench_channel::serve(generated.dir.clone())
        .await
        .expect("channel served");
    let app = TestApp::start_with(move |config| {
        config
            .channel_mirrors
            .insert(bench_channel::CHANNEL_NAME.to_owned(), channel_url);
        let base = format!("{}/{BASE}:bookworm", config.registry);
        config.base.conda.image = Some(base.parse().expect("reference"));
        config.build.workers = 2;
        config.api.wait_for_build_ms = 0;
    })
    .await;
    let pusher = RegistryClient::new(
        &app.address.to_string(),
        Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1)),
        &[],
    )
    .expect("client");
    debian_base::push_debian_python_base(&pusher, BASE).await;

    let mut builds = Vec::new();
    for packages in [
        ["busy-0", "busy-1", "busy-2", "busy-3"],
        ["busy-4", "busy-5", "busy-6", "busy-7"],
    ] {
        let response = reqwest::Client::new()
            .post(app.url("/api/v1/images"))
            .json(&json!({"packages": packages, "channels": [bench_channel::CHANNEL_NAME]}))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.expect("JSON");
        builds.push(answer["build"]["id"].as_str().expect("build id").to_owned());
    }

    // The client runs on a runtime of its own: kiln's being blocked cannot stop its timeouts.
    let base_url = format!("http://{}", app.address);
    let rounds = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime")
            .block_on(ask_while_building(&base_url, &builds))
    })
    .await
    .expect("the client thread");
    assert!(
        rounds > 0,
        "the builds never ran at the same time, so nothing was checked"
    );
}

/// Asks `/health` and `/v2/` for as long as both `builds` are BUILDING; returns how many
/// rounds both were BUILDING before and after the answers. Panics when an answer does not come
/// within a few seconds, or a build fails.
async fn ask_while_building(base_url: &str, builds: &[String]) -> usize {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let statuses = || async {
        let mut statuses = Vec::new();
        for id in builds {
            let record: Value = client
                .get(format!("{base_url}/api/v1/builds/{id}"))
                .send()
                .await
                .expect("build record answered in time")
                .json()
                .await
                .expect("JSON");
            statuses.push(record);
        }
        statuses
    };
    let all_building = |statuses: &[Value]| {
        statuses
            .iter()
            .all(|build| build["status"] == json!("BUILDING"))
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut rounds = 0;
    loop {
        let before = statuses().await;
        if before.iter().all(|build| build["status"] == json!("DONE")) {
            for build in &before {
                assert_eq!(build["succeeded"], json!(true), "{build}");
            }
            return rounds;
        }
        assert!(
            Instant::now() < deadline,
            "the builds did not end: {before:?}"
        );
        if !all_building(&before) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let health = client
            .get(format!("{base_url}/health"))
            .send()
            .await
            .expect("/health answered within 3 s while two builds run");
        assert_eq!(health.status(), 200);
        let registry = client
            .get(format!("{base_url}/v2/"))
            .send()
            .await
            .expect("/v2/ answered within 3 s while two builds run");
        assert_eq!(registry.status(), 401, "the registry's base check");
        if all_building(&statuses().await) {
            rounds += 1;
        }
    }
}
