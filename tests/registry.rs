//! The embedded registry against the OCI distribution-spec conformance suite.

mod support;

use std::path::Path;
use std::process::Command;

use support::{PUSHER, TestApp};

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
        .env("OCI_USERNAME", PUSHER.0)
        .env("OCI_PASSWORD", PUSHER.1)
        .env("OCI_TEST_PULL", "1")
        .env("OCI_TEST_PUSH", "1")
        .env("OCI_TEST_CONTENT_DISCOVERY", "1")
        .env("OCI_TEST_CONTENT_MANAGEMENT", "1")
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

#[path = "support/distribution.rs"]
mod distribution;

use bytes::Bytes;
use distribution::Distribution;
use kiln::registry::client::{Auth, BlobPush, RegistryClient, sha256_digest};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[tokio::test(flavor = "multi_thread")]
async fn client_round_trips_an_index_through_the_embedded_registry() {
    let app = TestApp::start().await;
    let host = app.address.to_string();
    let auth = Auth::Basic {
        user: PUSHER.0.into(),
        password: PUSHER.1.into(),
    };
    round_trip(&RegistryClient::new(&host, auth, &[]).expect("client")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_round_trips_an_index_through_cncf_distribution() {
    let registry = Distribution::start().await;
    let auth = Auth::Basic {
        user: registry.user.into(),
        password: registry.password.into(),
    };
    round_trip(&RegistryClient::new(&registry.host, auth, &[]).expect("client")).await;
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
    let wrong = Auth::Basic {
        user: PUSHER.0.into(),
        password: "wrong".into(),
    };
    let client = RegistryClient::new(&app.address.to_string(), wrong, &[]).expect("client");
    let pushed = client
        .push_blob_bytes("library/anonymous", Bytes::from_static(b"x"), None)
        .await;
    assert!(pushed.is_err(), "a push with a wrong password went through");
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
