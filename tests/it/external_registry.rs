//! kiln keeping everything in an external registry: CNCF Distribution (`docker-registry`) with
//! htpasswd Basic auth, configured as `[external_registry]`. kiln stops serving `/v2/` and its
//! token endpoint; a native build from the local channel lands in Distribution (`skopeo
//! inspect` sees it) and is a cache hit the second time; its SIF downloads through kiln's link;
//! a library push is pulled back; a remote build's uploaded build context reaches the builder
//! through Distribution.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::library::{Client, pull, push, sif, signup};
use crate::remote_build::{definition, text, token_for, unpack, write_client_files};
use crate::support::TestApp;
use crate::support::conda_channel::{CHANNEL_NAME, CondaChannel};
use crate::support::debian_base::push_debian_python_base;
use crate::support::distribution::Distribution;
use crate::support::go_tools::tool;
use crate::support::wave::nextflow_body;
use kiln::assemble::sif::SifArch;
use kiln::config::ExternalRegistry;
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient, sha256_digest};
use serde_json::{Value, json};

const BASE: &str = "kiln/base/debian";

/// Waits for the Wave request `answer` made to be done; returns its status.
async fn until_done(app: &TestApp, answer: &Value) -> Value {
    let id = answer["requestId"].as_str().expect("requestId");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let status: Value = reqwest::get(app.url(&format!("/v1alpha2/container/{id}/status")))
            .await
            .expect("status")
            .json()
            .await
            .expect("JSON");
        if status["status"] == "DONE" {
            return status;
        }
        assert!(Instant::now() < deadline, "not done: {status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn post(app: &TestApp, changes: Value) -> Value {
    let response = reqwest::Client::new()
        .post(app.url("/v1alpha2/container"))
        .json(&nextflow_body(changes))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

/// `skopeo inspect` of `image` at Distribution, as anyone with its credentials runs it.
fn skopeo_inspect(registry: &Distribution, image: &str) -> Value {
    let output = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds"])
        .arg(registry.creds())
        .arg(format!("docker://{}/{image}", registry.host))
        .output()
        .expect("skopeo runs");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{image}: {stderr}");
    serde_json::from_str(&stdout).expect("a manifest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kiln_keeps_everything_in_cncf_distribution() {
    let registry = Distribution::start().await;
    let channel = CondaChannel::build();
    let server = channel.serve();
    let (url, user, password) = (registry.url(), registry.user, registry.password);
    let channel_url = server.url.clone();
    let app = TestApp::start_with(move |config| {
        config.external_registry = Some(ExternalRegistry {
            url: url.parse().expect("URL"),
            user: Some(user.to_owned()),
            password: Some(password.into()),
        });
        let base = format!("{}/{BASE}:bookworm", config.registry);
        config
            .channel_mirrors
            .insert(CHANNEL_NAME.to_owned(), channel_url);
        config.base.conda.image = Some(base.parse().expect("reference"));
        config.base.python.image = Some(base.parse().expect("reference"));
        config.base.python.python = None;
        config.api.wait_for_build_ms = 0;
    })
    .await;
    let distribution = RegistryClient::new(
        &registry.host,
        Auth::Basic(Credentials::new(registry.user, registry.password)),
        &[],
    )
    .expect("client");
    push_debian_python_base(&distribution, BASE).await;

    // kiln's own registry is gone: Distribution is the registry.
    for path in [
        "/v2/",
        "/v2/library/kiln-hello/tags/list",
        "/registry/token",
    ] {
        let status = reqwest::get(app.url(path)).await.expect("GET").status();
        assert_eq!(status, 404, "{path}");
    }

    // A native build: pushed to Distribution, then a cache hit read from there.
    let built = post(&app, json!({})).await;
    assert_eq!(until_done(&app, &built).await["succeeded"], json!(true));
    let target = built["targetImage"].as_str().expect("targetImage");
    let path = target
        .strip_prefix(&format!("{}/", app.address))
        .expect("named with kiln's public host");
    let manifest = skopeo_inspect(&registry, path);
    assert!(manifest["layers"].as_array().is_some_and(|l| !l.is_empty()));
    let again = post(&app, json!({"freeze": false})).await;
    assert_eq!(again["cached"], json!(true), "{again}");

    // A SIF: published in Distribution, downloaded through kiln's link without credentials.
    let sif_build = post(&app, json!({"format": "sif"})).await;
    assert_eq!(until_done(&app, &sif_build).await["succeeded"], json!(true));
    let oras = sif_build["targetImage"].as_str().expect("targetImage");
    let (repository, tag) = oras
        .strip_prefix(&format!("oras://{}/", app.address))
        .and_then(|path| path.split_once(':'))
        .expect("an oras:// image of kiln's");
    let artifact = skopeo_inspect(&registry, &format!("{repository}:{tag}"));
    let sif_digest = artifact["layers"][0]["digest"].as_str().expect("the SIF");
    let page = reqwest::get(app.url(&format!(
        "/view/builds/{}",
        sif_build["buildId"].as_str().expect("buildId")
    )))
    .await
    .expect("build page")
    .text()
    .await
    .expect("HTML");
    let link = page
        .split("href=\"")
        .filter_map(|rest| rest.split('"').next())
        .find(|href| href.contains("/blobs/sha256/"))
        .unwrap_or_else(|| panic!("no download link in {page}"))
        .replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&amp;", "&");
    let file = reqwest::get(&link).await.expect("download");
    assert_eq!(file.status(), 200, "{link}");
    let bytes = file.bytes().await.expect("the SIF");
    assert_eq!(sha256_digest(&bytes), sif_digest, "{link}");
    let hex = sif_digest.trim_start_matches("sha256:");
    let contexts = app.url(&format!(
        "/blobs/sha256/{}/{hex}/data?repository=kiln/contexts/alice",
        &hex[..2]
    ));
    let refused = reqwest::get(&contexts).await.expect("GET").status();
    assert_eq!(refused, 404, "build contexts are never served");

    // The library: a push lands in Distribution and pulls back the same.
    let alice = signup(&app, "alice").await;
    let (file, _) = sif(SifArch::Amd64, "hello through distribution").await;
    push(
        &Client::new(&app, Some(&alice)),
        "alice/tools/hello",
        "1.0",
        &file,
        "amd64",
    )
    .await;
    let (_, pulled) = pull(&app, "alice/tools/hello", "1.0", "amd64").await;
    assert_eq!(pulled, file);
    let pushed = skopeo_inspect(&registry, "library/alice/tools/hello:1.0");
    assert_eq!(
        pushed["layers"][0]["digest"].as_str(),
        Some(sha256_digest(&file).as_str())
    );

    // A remote build with `%files`: its context goes to Distribution and back to the builder.
    let token = token_for(&app, "bob").await;
    let dir = tempfile::tempdir().expect("temp dir");
    write_client_files(dir.path());
    let sent = definition(&app, "    echo 'built by kiln' > /opt/built.txt");
    std::fs::write(dir.path().join("app.def"), &sent).expect("write the definition");
    let (scs, app_url) = (dir.path().to_owned(), app.url(""));
    let output = tokio::task::spawn_blocking(move || {
        Command::new(tool("scs-build"))
            .current_dir(&scs)
            .env_remove("SYLABS_AUTH_TOKEN")
            .args(["build", "--url", &app_url, "--auth-token", &token])
            .args(["--arch", "amd64", "app.def", "app.sif"])
            .output()
            .expect("scs-build runs")
    })
    .await
    .expect("scs-build finished");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("unpacked the build context sha256."),
        "{stdout}"
    );
    assert!(
        stderr.contains("Image checksum verified successfully."),
        "{stderr}"
    );
    let root = unpack(&dir.path().join("app.sif"));
    let greeting = std::fs::read_to_string(root.path().join("root/opt/greeting.txt"))
        .expect("the %files copy");
    assert_eq!(greeting, "hello from the client\n");
    let result = stdout
        .split("pushed library://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the log names the library image");
    let (container, tag) = result.split_once(':').expect("entity/collection/name:tag");
    skopeo_inspect(&registry, &format!("library/{container}:{tag}"));
}
