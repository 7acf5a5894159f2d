//! The embedded registry against the OCI distribution-spec conformance suite.

use crate::support::distribution;

use std::path::Path;
use std::process::Command;

use crate::support::{PUSHER, REGISTRY_USER, TestApp};

#[tokio::test(flavor = "multi_thread")]
async fn passes_the_oci_conformance_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let suite = root.join("target/tools/oci-conformance.test");
    let built = Command::new(root.join("tests/support/oci-conformance.sh"))
        .arg(&suite)
        .status()
        .expect("the conformance build script runs (it needs Go)");
    assert!(built.success(), "building the conformance suite failed");

    let app = TestApp::start().await;
    let reports = tempfile::tempdir().expect("temp dir");
    let output = tokio::process::Command::new(&suite)
        .arg("-ginkgo.no-color")
        .env("OCI_ROOT_URL", app.url(""))
        .env("OCI_NAMESPACE", "conformance/repo1")
        .env("OCI_CROSSMOUNT_NAMESPACE", "conformance/repo2")
        // An ordinary registry user: everything but kiln's own namespaces is theirs.
        .env("OCI_USERNAME", REGISTRY_USER.0)
        .env("OCI_PASSWORD", REGISTRY_USER.1)
        .env("OCI_TEST_PULL", "1")
        .env("OCI_TEST_PUSH", "1")
        .env("OCI_TEST_CONTENT_DISCOVERY", "1")
        .env("OCI_TEST_CONTENT_MANAGEMENT", "1")
        // kiln mounts only from a named repository (`from=`), never guessing one.
        .env("OCI_AUTOMATIC_CROSSMOUNT", "false")
        .env("OCI_REPORT_DIR", reports.path())
        .output()
        .await
        .expect("the conformance suite runs");
    let report = String::from_utf8_lossy(&output.stdout);
    for line in report
        .lines()
        .filter(|l| l.contains("Ran ") || l.contains("Passed |"))
    {
        println!("OCI conformance: {}", line.trim());
    }
    assert!(
        output.status.success(),
        "the conformance suite failed:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

use bytes::Bytes;
use distribution::Distribution;
use kiln::assemble::MEDIA_TYPE_SIF_LAYER;
use kiln::credentials::Credentials;
use kiln::registry::Images;
use kiln::registry::client::{Auth, BlobPush, RegistryClient, sha256_digest};
use kiln::registry::images::ImagesError;
use kiln::registry::path::Digest;
use tokio::io::AsyncReadExt as _;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[tokio::test(flavor = "multi_thread")]
async fn client_round_trips_an_index_through_the_embedded_registry() {
    let app = TestApp::start().await;
    let host = app.address.to_string();
    let auth = Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1));
    round_trip(&RegistryClient::new(&host, auth, &[]).expect("client")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_round_trips_an_index_through_cncf_distribution() {
    let registry = Distribution::start().await;
    let auth = Auth::Basic(Credentials::new(registry.user, registry.password));
    round_trip(&RegistryClient::new(&registry.host, auth, &[]).expect("client")).await;
}

/// The image handle the API reads through, over a remote registry: a SIF goes in, is published
/// as an artifact, and is found and read back by tag, size and content.
#[tokio::test(flavor = "multi_thread")]
async fn images_publish_and_read_a_sif_through_cncf_distribution() {
    let registry = Distribution::start().await;
    let auth = Auth::Basic(Credentials::new(registry.user, registry.password));
    let client = RegistryClient::new(&registry.host, auth, &[]).expect("client");
    sif_round_trip(&Images::remote(client)).await;
}

/// The same, with kiln's own registry as the remote one (as a kiln API in another process would
/// reach it).
#[tokio::test(flavor = "multi_thread")]
async fn images_publish_and_read_a_sif_through_kilns_registry_over_http() {
    let app = TestApp::start().await;
    let auth = Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1));
    let client = RegistryClient::new(&app.address.to_string(), auth, &[]).expect("client");
    sif_round_trip(&Images::remote(client)).await;
}

/// The same, over kiln's embedded storage, as the API reads it.
#[tokio::test(flavor = "multi_thread")]
async fn images_publish_and_read_a_sif_in_the_embedded_registry() {
    let data = tempfile::tempdir().expect("temp dir");
    let config = kiln::config::Config {
        data_dir: data.path().to_owned(),
        ..kiln::config::Config::default()
    };
    let registry = kiln::registry::RegistryState::new(config.registry_config())
        .await
        .expect("the registry opens");
    sif_round_trip(&Images::embedded(registry)).await;
}

async fn sif_round_trip(images: &Images) {
    let repository = "library/alice/default/tool";
    let sif = Bytes::from("SIF_MAGIC and a root file system ".repeat(50_000));
    let digest = Digest::parse(&sha256_digest(&sif)).expect("digest");
    let chunks = |bytes: &Bytes| {
        let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
            .chunks(1 << 16)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(chunks)
    };

    // Bytes that are not what their digest names, or a stream that fails, leave nothing.
    let wrong = images
        .put_blob(repository, &digest, chunks(&sif.slice(1..)))
        .await;
    assert!(
        matches!(wrong, Err(ImagesError::DigestMismatch)),
        "{wrong:?}"
    );
    let broken = futures_util::stream::iter(vec![
        Ok(sif.slice(..1000)),
        Err(std::io::Error::other("the client went away")),
    ]);
    assert!(images.put_blob(repository, &digest, broken).await.is_err());
    assert!(
        images
            .open_blob(repository, &digest)
            .await
            .expect("the registry answers")
            .is_none()
    );

    images
        .put_blob(repository, &digest, chunks(&sif))
        .await
        .expect("the SIF is stored");
    let size = sif.len() as u64;
    let tagged = images
        .publish_sif(repository, &digest, size, "tool_1.0.sif", Some("1.0"))
        .await
        .expect("the artifact is published");
    let untagged = images
        .publish_sif(repository, &digest, size, "tool.sif", None)
        .await
        .expect("the untagged artifact is published");
    assert_ne!(tagged, untagged);

    assert_eq!(
        images
            .tag_digest(repository, "1.0")
            .await
            .expect("the registry answers"),
        Some(tagged.clone())
    );
    assert_eq!(
        images
            .tag_digest(repository, "2.0")
            .await
            .expect("the registry answers"),
        None
    );
    assert_eq!(
        images
            .tag_digest("library/nobody", "1.0")
            .await
            .expect("the registry answers"),
        None
    );
    for reference in ["1.0", tagged.as_str(), untagged.as_str()] {
        let layer = images
            .first_layer(repository, reference)
            .await
            .expect("the registry answers")
            .expect("the artifact has its layer");
        assert_eq!(layer.media_type, MEDIA_TYPE_SIF_LAYER, "{reference}");
        assert_eq!(
            (layer.digest.clone(), layer.size),
            (digest.clone(), size),
            "{reference}"
        );
    }
    assert!(
        images
            .first_layer(repository, "2.0")
            .await
            .expect("the registry answers")
            .is_none()
    );

    assert_eq!(
        images
            .blob_size(repository, &digest)
            .await
            .expect("the registry answers"),
        Some(size)
    );
    let mut blob = images
        .open_blob(repository, &digest)
        .await
        .expect("the registry answers")
        .expect("the SIF is there");
    assert_eq!(blob.size, size);
    let mut read = Vec::new();
    blob.reader
        .read_to_end(&mut read)
        .await
        .expect("the SIF reads");
    assert!(read == sif, "the SIF read back is not the one stored");
    let absent = Digest::parse(&sha256_digest(b"never stored")).expect("digest");
    assert!(
        images
            .open_blob(repository, &absent)
            .await
            .expect("the registry answers")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kilns_builders_push_with_their_own_credential() {
    let data = tempfile::tempdir().expect("temp dir");
    let config = kiln::config::Config {
        data_dir: data.path().to_owned(),
        ..kiln::config::Config::default()
    };
    let registry = kiln::registry::RegistryState::new(config.registry_config())
        .await
        .expect("registry opens");
    let builder = registry.builder_credentials().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        axum::serve(listener, kiln::registry::router(registry))
            .await
            .expect("serves");
    });
    assert_eq!(builder.user, kiln::registry::BUILDER_USER);
    assert!(
        builder.password.expose().len() >= 32,
        "a long random password"
    );
    let auth = Auth::Basic(builder);
    let client = RegistryClient::new(&address.to_string(), auth, &[]).expect("client");
    let (digest, pushed) = client
        .push_blob_bytes("library/built", Bytes::from_static(b"layer"), None)
        .await
        .expect("the builder pushes");
    assert_eq!(pushed, BlobPush::Uploaded);
    assert!(
        client
            .blob_exists("library/built", &digest)
            .await
            .expect("HEAD")
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_without_credentials_are_refused() {
    let app = TestApp::start().await;
    let client =
        RegistryClient::new(&app.address.to_string(), Auth::Anonymous, &[]).expect("client");
    let pushed = client
        .push_blob_bytes("library/anonymous", Bytes::from_static(b"x"), None)
        .await;
    assert!(pushed.is_err(), "an anonymous push went through");
    let wrong = Auth::Basic(Credentials::new(PUSHER.0, "wrong"));
    let client = RegistryClient::new(&app.address.to_string(), wrong, &[]).expect("client");
    let pushed = client
        .push_blob_bytes("library/anonymous", Bytes::from_static(b"x"), None)
        .await;
    assert!(pushed.is_err(), "a push with a wrong password went through");
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_users_cannot_write_into_kilns_namespaces() {
    let app = TestApp::start().await;
    let http = reqwest::Client::new();
    let digest = sha256_digest(b"poison");
    for repository in [
        "library/samtools",
        "kiln/base/debian",
        "mirror/docker.io/library/x",
    ] {
        let refused = http
            .post(app.url(&format!("/v2/{repository}/blobs/uploads/?digest={digest}")))
            .basic_auth(REGISTRY_USER.0, Some(REGISTRY_USER.1))
            .body(&b"poison"[..])
            .send()
            .await
            .expect("push");
        assert_eq!(refused.status(), 403);
        let body: serde_json::Value = refused.json().await.expect("json");
        assert_eq!(body["errors"][0]["code"], "DENIED");
        let message = body["errors"][0]["message"].as_str().expect("message");
        let namespace = repository.split('/').next().expect("namespace");
        assert!(
            message.contains(&format!("{namespace}/")) && message.contains("operators"),
            "{message}"
        );
    }
    // The same user pushes elsewhere, and the operator anywhere.
    for (user, repository) in [(REGISTRY_USER, "alice/tools"), (PUSHER, "library/samtools")] {
        let pushed = http
            .post(app.url(&format!("/v2/{repository}/blobs/uploads/?digest={digest}")))
            .basic_auth(user.0, Some(user.1))
            .body(&b"poison"[..])
            .send()
            .await
            .expect("push");
        assert_eq!(pushed.status(), 201, "{} to {repository}", user.0);
    }
}

/// `kiln gc` refuses to run beside a server on the same data directory, and with the server
/// stopped removes unreferenced blobs, which then no route serves.
#[tokio::test(flavor = "multi_thread")]
async fn kiln_gc_removes_unreferenced_blobs() {
    let data = tempfile::tempdir().expect("temp dir");
    let http = reqwest::Client::new();
    let orphan = b"an orphaned layer".to_vec();
    let digest = sha256_digest(&orphan);
    let gc = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("gc")
            .env_clear()
            .env("KILN_DATA_DIR", data.path())
            .env("KILN_GC_GRACE_SECS", "0")
            .output()
            .expect("kiln gc runs")
    };

    let server = ServeProcess::start(data.path()).await;
    let pushed = http
        .post(server.url(&format!("/v2/alice/tools/blobs/uploads/?digest={digest}")))
        .basic_auth(PUSHER.0, Some(PUSHER.1))
        .body(orphan.clone())
        .send()
        .await
        .expect("push");
    assert_eq!(pushed.status(), 201);
    let busy = gc();
    assert!(!busy.status.success());
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(
        stderr.contains("in use by another kiln process"),
        "{stderr}"
    );
    drop(server);

    let collected = gc();
    let stdout = String::from_utf8_lossy(&collected.stdout);
    assert!(
        collected.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&collected.stderr)
    );
    assert!(
        stdout.starts_with(&format!("removed 1 blobs ({} bytes)", orphan.len())),
        "{stdout}"
    );

    let server = ServeProcess::start(data.path()).await;
    let link = kiln::registry::blob_download_path(&digest).expect("a sha256 digest");
    for path in [format!("/v2/alice/tools/blobs/{digest}"), link] {
        let gone = http.get(server.url(&path)).send().await.expect("get");
        assert_eq!(gone.status(), 404, "{path}");
    }
}

/// Pushes a two-platform image the way kiln's builder will (layers streamed from files, configs
/// from memory, manifests by digest, the index by tag), then reads everything back.
async fn round_trip(client: &RegistryClient) {
    let repository = "library/roundtrip";
    let work = tempfile::tempdir().expect("temp dir");
    let mut children = Vec::new();
    for (arch, content) in [("amd64", "layer for amd64"), ("arm64", "layer for arm64")] {
        let layer = Bytes::from(content.repeat(10_000));
        let layer_path = work.path().join(arch);
        std::fs::write(&layer_path, &layer).expect("write layer");
        let layer_digest = sha256_digest(&layer);
        let pushed = client
            .push_blob_file(repository, &layer_digest, &layer_path, None)
            .await
            .expect("layer pushes");
        assert_eq!(pushed, BlobPush::Uploaded);
        let again = client
            .push_blob_file(repository, &layer_digest, &layer_path, None)
            .await
            .expect("layer pushes again");
        assert_eq!(again, BlobPush::Present, "a blob is never uploaded twice");

        let config = Bytes::from(format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
        ));
        let (config_digest, _) = client
            .push_blob_bytes(repository, config.clone(), None)
            .await
            .expect("config pushes");
        let manifest = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        ));
        let digest = sha256_digest(&manifest);
        let pushed = client
            .push_manifest(repository, &digest, manifest.clone(), OCI_MANIFEST)
            .await
            .expect("manifest pushes");
        assert_eq!(pushed, digest);
        children.push((arch, digest, manifest, layer_digest, layer));
    }
    let entries: Vec<String> = children
        .iter()
        .map(|(arch, digest, manifest, ..)| {
            format!(
                r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
                manifest.len()
            )
        })
        .collect();
    let index = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        entries.join(",")
    ));
    let index_digest = client
        .push_manifest(repository, "1.0--abc", index.clone(), OCI_INDEX)
        .await
        .expect("index pushes");

    assert_eq!(
        client
            .tag_digest(repository, "1.0--abc")
            .await
            .expect("HEAD"),
        Some(index_digest.clone())
    );
    assert_eq!(
        client
            .tag_digest(repository, "missing")
            .await
            .expect("HEAD"),
        None
    );
    assert_eq!(
        client
            .tag_digest("library/nothing-here", "1")
            .await
            .expect("HEAD"),
        None
    );

    let (pulled, digest) = client
        .pull_manifest(repository, "1.0--abc", &[OCI_INDEX])
        .await
        .expect("index pulls");
    assert_eq!(pulled, index, "the index comes back byte for byte");
    assert_eq!(digest, index_digest);
    for (arch, digest, manifest, layer_digest, layer) in &children {
        let (pulled, _) = client
            .pull_manifest(repository, digest, &[OCI_MANIFEST])
            .await
            .expect("manifest pulls");
        assert_eq!(
            &pulled, manifest,
            "{arch} manifest comes back byte for byte"
        );
        let mut blob = Vec::new();
        client
            .pull_blob(repository, layer_digest, &mut blob)
            .await
            .expect("layer pulls");
        assert_eq!(&blob, layer, "{arch} layer comes back whole");
    }

    let (arch, _, _, layer_digest, _) = &children[0];
    let mounted = client
        .push_blob_file(
            "library/other",
            layer_digest,
            &work.path().join(arch),
            Some(repository),
        )
        .await
        .expect("mount");
    assert_eq!(
        mounted,
        BlobPush::Mounted,
        "a blob in the same registry is mounted, not sent"
    );
}

/// Sends one raw HTTP/1.1 request line (no URL normalization, unlike an HTTP client library)
/// and returns the status code.
async fn raw_status(address: std::net::SocketAddr, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn traversal_and_malformed_names_are_refused() {
    let app = TestApp::start().await;
    let digest = format!("sha256:{}", "0".repeat(64));
    let refused = [
        "/v2/../../etc/passwd/manifests/latest".to_owned(),
        "/v2/library/../../../etc/manifests/latest".to_owned(),
        "/v2/library/%2e%2e/%2e%2e/manifests/latest".to_owned(),
        "/v2/library//x/manifests/latest".to_owned(),
        "/v2/Library/Upper/manifests/latest".to_owned(),
        "/v2/library/-x/manifests/latest".to_owned(),
        format!("/v2/library/x/blobs/sha256:../../{}", "0".repeat(58)),
        "/v2/library/x/blobs/md5:abc".to_owned(),
        format!("/v2/{}/manifests/latest", "a".repeat(300)),
    ];
    for path in &refused {
        let status = raw_status(app.address, "GET", path).await;
        assert!(
            status == 400 || status == 404,
            "GET {path} answered {status}, expected a refusal"
        );
    }
    // A well-formed nested name is fine (and simply unknown).
    assert_eq!(
        raw_status(
            app.address,
            "GET",
            &format!("/v2/library/a/b/blobs/{digest}")
        )
        .await,
        404
    );
}

/// `kiln serve` as a child process on a fixed data directory, so it can be killed and restarted.
struct ServeProcess {
    child: std::process::Child,
    address: std::net::SocketAddr,
}

impl ServeProcess {
    async fn start(data: &Path) -> ServeProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("serve")
            .env_clear()
            .env("KILN_LISTEN", address.to_string())
            .env("KILN_DATA_DIR", data)
            .env("KILN_REGISTRY_USERS", format!("{}:{}", PUSHER.0, PUSHER.1))
            .env("KILN_REGISTRY_OPERATORS", PUSHER.0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kiln serve starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::net::TcpStream::connect(address).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "kiln serve did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        ServeProcess { child, address }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// SIGKILL: no cleanup, no flush, like a crash or an OOM kill.
    fn kill_hard(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_upload_restarts_clean() {
    use tokio::io::AsyncWriteExt;
    let data = tempfile::tempdir().expect("temp dir");
    let blob: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let digest = sha256_digest(&blob);
    let half = blob.len() / 2;
    let http = reqwest::Client::new();
    let repository = "library/crash";

    let server = ServeProcess::start(data.path()).await;
    // A chunked upload that got half way.
    let started = http
        .post(server.url(&format!("/v2/{repository}/blobs/uploads/")))
        .basic_auth(PUSHER.0, Some(PUSHER.1))
        .send()
        .await
        .expect("start upload");
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let patched = http
        .patch(server.url(&location))
        .basic_auth(PUSHER.0, Some(PUSHER.1))
        .header("content-range", format!("0-{}", half - 1))
        .body(blob[..half].to_vec())
        .send()
        .await
        .expect("first chunk");
    assert_eq!(patched.status(), 202);
    // A monolithic push whose body is cut off when the server dies.
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .expect("connect");
    let credentials = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", PUSHER.0, PUSHER.1))
    };
    let head = format!(
        "POST /v2/{repository}/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {credentials}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        server.address,
        blob.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream
        .write_all(&blob[..half])
        .await
        .expect("write half a body");
    stream.flush().await.expect("flush");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.kill_hard();
    drop(stream);

    let server = ServeProcess::start(data.path()).await;
    let head = http
        .head(server.url(&format!("/v2/{repository}/blobs/{digest}")))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(
        head.status(),
        404,
        "no half-written blob is visible after the crash"
    );
    let hex = digest.trim_start_matches("sha256:");
    assert!(
        !data
            .path()
            .join("registry/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .exists(),
        "no blob file under the store's content address"
    );
    let leftovers = std::fs::read_dir(data.path().join("registry/tmp"))
        .expect("tmp exists")
        .count();
    assert_eq!(
        leftovers, 0,
        "temporary files of interrupted writes are swept at start"
    );

    // The interrupted chunked upload can be finished, and its digest is checked.
    let finished = http
        .put(server.url(&format!("{location}?digest={digest}")))
        .basic_auth(PUSHER.0, Some(PUSHER.1))
        .header("content-range", format!("{half}-{}", blob.len() - 1))
        .body(blob[half..].to_vec())
        .send()
        .await
        .expect("finish upload");
    assert_eq!(finished.status(), 201, "the upload resumes after a restart");
    let pulled = http
        .get(server.url(&format!("/v2/{repository}/blobs/{digest}")))
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    assert_eq!(sha256_digest(&pulled), digest, "the blob is whole");
}

/// Runs curl (a real HTTP client, as `singularity pull https://…` users would meet it) and
/// returns its stdout; fails the test if curl is missing or fails.
fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(args)
        .output()
        .expect("curl is installed");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The status code of a GET with curl, the body going to `out`.
fn curl_status(url: &str, out: &Path, extra: &[&str]) -> u16 {
    let out = out.to_str().expect("utf-8 path");
    let mut args = vec!["-sS", "-o", out, "-w", "%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args).trim().parse().expect("a status code")
}

/// `curl -sSI`: the status and the headers (names lowercased) of a HEAD.
fn curl_head(url: &str) -> (u16, std::collections::HashMap<String, String>) {
    let response = curl(&["-sSI", url]);
    let mut lines = response.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

#[tokio::test(flavor = "multi_thread")]
async fn blobs_download_over_plain_https_by_digest() {
    let app = TestApp::start().await;
    let auth = Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1));
    let client = RegistryClient::new(&app.address.to_string(), auth, &[]).expect("client");
    // 3 MiB of incompressible bytes (xorshift64, fixed seed so a failure reproduces).
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let blob: Vec<u8> = (0..(3usize << 20) / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    let (digest, _) = client
        .push_blob_bytes("library/sif", Bytes::from(blob.clone()), None)
        .await
        .expect("blob pushes");
    let hex = digest.trim_start_matches("sha256:").to_owned();

    let path = kiln::registry::blob_download_path(&digest).expect("a sha256 digest");
    assert_eq!(path, format!("/blobs/sha256/{}/{hex}/data", &hex[..2]));
    assert_eq!(kiln::registry::blob_download_path("sha256:abc"), None);
    assert_eq!(kiln::registry::blob_download_path(&hex), None);
    let url = app.url(&path);

    let (status, headers) = curl_head(&url);
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(headers["content-length"], blob.len().to_string());
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["etag"], format!("\"{digest}\""));
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(headers["docker-content-digest"], digest);
    let last_modified = &headers["last-modified"];
    assert!(
        last_modified.ends_with(" GMT"),
        "an HTTP date: {last_modified}"
    );
    let (_, again) = curl_head(&url);
    assert_eq!(
        &again["last-modified"], last_modified,
        "Last-Modified is stable"
    );
    // The registry route reports the same date for the same file.
    let (status, v2) = curl_head(&app.url(&format!("/v2/library/sif/blobs/{digest}")));
    assert_eq!(status, 200);
    assert_eq!(&v2["last-modified"], last_modified);

    let work = tempfile::tempdir().expect("temp dir");
    let file = work.path().join("image.sif");
    assert_eq!(curl_status(&url, &file, &[]), 200);
    let downloaded = std::fs::read(&file).expect("downloaded file");
    assert_eq!(downloaded.len(), blob.len());
    assert_eq!(
        sha256_digest(&downloaded),
        digest,
        "the file comes back whole"
    );

    assert_eq!(curl_status(&url, &file, &["-r", "100-199"]), 206);
    assert_eq!(
        std::fs::read(&file).expect("range"),
        &blob[100..200],
        "bytes 100-199"
    );
    assert_eq!(curl_status(&url, &file, &["-r", "999999999-"]), 416);

    let wrong = if hex.starts_with("00") { "01" } else { "00" };
    let wrong_prefix = app.url(&format!("/blobs/sha256/{wrong}/{hex}/data"));
    assert_eq!(curl_status(&wrong_prefix, &file, &[]), 404);
    let message = std::fs::read_to_string(&file).expect("error body");
    assert!(
        message.contains("/blobs/sha256/<first 2 hex digits>/"),
        "a bad link is explained: {message}"
    );
    let unknown = "0".repeat(64);
    let unknown = app.url(&format!("/blobs/sha256/00/{unknown}/data"));
    assert_eq!(curl_status(&unknown, &file, &[]), 404);
    let message = std::fs::read_to_string(&file).expect("error body");
    assert!(message.contains("unknown"), "{message}");
}
