//! kiln keeping everything in an external registry: CNCF Distribution (`docker-registry`) with
//! htpasswd Basic auth, configured as `[external_registry]`. kiln stops serving `/v2/` and its
//! token endpoint; a native build from the local channel lands in Distribution (`skopeo
//! inspect` sees it), its SBOM is found there, and it is a cache hit the second time; a library push lands there, pulls back
//! and downloads through kiln's link; a remote build on that SIF gets its uploaded build context
//! and the SIF through Distribution.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::library::{Client, pull, push, sif, signup};
use crate::remote_build::{text, unpack, write_client_files};
use crate::support::TestApp;
use crate::support::conda_channel::{CHANNEL_NAME, CondaChannel};
use crate::support::debian_base::push_debian_python_base;
use crate::support::distribution::Distribution;
use crate::support::go_tools::tool;
use crate::support::wave::nextflow_body;
use kiln::assemble::sif::SifArch;
use kiln::build::contexts::{Announced, BuildContexts, CONTEXT_TTL, ContextLimits, UnpackError};
use kiln::config::ExternalRegistry;
use kiln::credentials::Credentials;
use kiln::registry::Images;
use kiln::registry::blob_download_path;
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
    let started = Instant::now();
    let lap = |what: &str| println!("{what}: {:.1} s", started.elapsed().as_secs_f64());
    push_debian_python_base(&distribution, BASE).await;
    lap("the Debian base in Distribution");

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
    let sbom = reqwest::get(app.url(&format!(
        "/view/builds/{}/sbom.spdx.json",
        built["buildId"].as_str().expect("buildId")
    )))
    .await
    .expect("SBOM");
    // Its SBOM, found through the referrers tag schema (Distribution 2.8 has no referrers API).
    assert_eq!(sbom.status(), 200);
    let sbom: Value = sbom.json().await.expect("SPDX JSON");
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let again = post(&app, json!({"freeze": false})).await;
    assert_eq!(again["cached"], json!(true), "{again}");
    lap("a native build and its cache hit");

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

    // Its download link, streamed through kiln without credentials; contexts never are.
    let digest = sha256_digest(&file);
    let link = blob_download_path(&digest).expect("a sha256 digest");
    let file_link = app.url(&format!("{link}?repository=library/alice/tools/hello"));
    let downloaded = reqwest::get(&file_link).await.expect("download");
    assert_eq!(downloaded.status(), 200, "{file_link}");
    assert_eq!(downloaded.bytes().await.expect("the SIF"), file);
    for refused in ["?repository=kiln/contexts/alice", ""] {
        let status = reqwest::get(app.url(&format!("{link}{refused}")))
            .await
            .expect("GET")
            .status();
        assert_eq!(status, 404, "{link}{refused}");
    }
    lap("a library push, pull and download");

    // A remote build with `%files` on that SIF: its context goes to Distribution and back to
    // the builder, which reads the SIF from there too.
    let dir = tempfile::tempdir().expect("temp dir");
    write_client_files(dir.path());
    let sent = "Bootstrap: localimage\nFrom: alice/tools/hello:1.0\n\n\
                %files\n    greeting.txt /opt/greeting.txt\n";
    std::fs::write(dir.path().join("app.def"), sent).expect("write the definition");
    let (scs, app_url) = (dir.path().to_owned(), app.url(""));
    let output = tokio::task::spawn_blocking(move || {
        Command::new(tool("scs-build"))
            .current_dir(&scs)
            .env_remove("SYLABS_AUTH_TOKEN")
            .args(["build", "--url", &app_url, "--auth-token", &alice])
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
    let unpacked = unpack(&dir.path().join("app.sif"));
    let read = |path: &str| std::fs::read_to_string(unpacked.path().join("root").join(path));
    assert_eq!(
        read("opt/greeting.txt").expect("the %files copy"),
        "hello from the client\n"
    );
    assert_eq!(
        read("hello").expect("the SIF built on"),
        "hello through distribution"
    );
    let result = stdout
        .split("pushed library://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the log names the library image");
    let (container, tag) = result.split_once(':').expect("entity/collection/name:tag");
    skopeo_inspect(&registry, &format!("library/{container}:{tag}"));
    lap("a remote build with a build context");
}

/// A build context in Distribution outlives its garbage collection while its tag stands (as a
/// queued build needs it), is fetched from there, and is collected once its client deletes it;
/// one past the expiry is swept.
#[tokio::test(flavor = "multi_thread")]
async fn build_contexts_in_distribution_survive_its_garbage_collection() {
    let registry = Distribution::start().await;
    let client = RegistryClient::new(
        &registry.host,
        Auth::Basic(Credentials::new(registry.user, registry.password)),
        &[],
    )
    .expect("client");
    let scratch = tempfile::tempdir().expect("temp dir");
    let contexts = BuildContexts::new(Images::remote(client.clone()), scratch.path().join("s"));
    let dir = tempfile::tempdir().expect("temp dir");
    write_client_files(dir.path());
    let archive = dir.path().join("context.tar.gz");
    let packed = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .args(["-C", &dir.path().display().to_string(), "greeting.txt"])
        .status()
        .expect("tar runs");
    assert!(packed.success());
    let bytes = std::fs::read(&archive).expect("the archive");
    let digest = sha256_digest(&bytes);
    let hex = digest.trim_start_matches("sha256:").to_owned();
    let limits = ContextLimits {
        max_unpacked: 1 << 20,
        max_entries: 10,
        max_expansion: 1000,
    };
    let receive = |user: &'static str| {
        let (contexts, hex, bytes) = (contexts.clone(), hex.clone(), bytes.clone());
        async move {
            let announced = Announced {
                digest: &hex,
                size: bytes.len() as u64,
            };
            let upload =
                futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
            contexts
                .receive(user, announced, upload, limits)
                .await
                .expect("the context is kept");
        }
    };
    receive("alice").await;
    assert!(contexts.exists("alice", &hex).await.expect("look-up"));

    registry.collect_garbage();
    let target = dir.path().join("build/context");
    std::fs::create_dir_all(&target).expect("mkdir");
    let files = contexts
        .unpack("alice", &hex, &target)
        .await
        .expect("unpacked");
    assert_eq!(files, 1);
    assert_eq!(
        std::fs::read_to_string(target.join("greeting.txt")).expect("unpacked file"),
        "hello from the client\n"
    );

    assert!(contexts.delete("alice", &hex).await.expect("deleted"));
    assert!(!contexts.delete("alice", &hex).await.expect("look-up"));
    registry.collect_garbage();
    let gone = contexts.unpack("alice", &hex, &target).await.unwrap_err();
    assert!(matches!(gone, UnpackError::Missing { .. }), "{gone}");
    let blob = client
        .blob_stream("kiln/contexts/alice", &digest)
        .await
        .expect("look-up");
    assert!(blob.is_none(), "the collection took the deleted context");

    receive("bob").await;
    assert_eq!(contexts.remove_stale(CONTEXT_TTL).await.expect("sweep"), 0);
    assert_eq!(
        contexts.remove_stale(Duration::ZERO).await.expect("sweep"),
        1
    );
    assert!(!contexts.exists("bob", &hex).await.expect("look-up"));
}
