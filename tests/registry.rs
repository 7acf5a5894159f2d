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
