//! Base images kiln bootstraps itself with mmdebstrap, checked as a user would: pushed under
//! the tag, readable by the native builder, runnable by buildah, and reproducible.

mod support;

use std::process::Command;

use kiln::base::{self, BaseImage, BootstrapOptions};
use kiln::registry::client::{Auth, RegistryClient};
use kiln::spec::Platform;
use support::{PUSHER, TestApp};

const REPOSITORY: &str = "kiln/base/debian-python";
const TAG: &str = "bookworm";

fn client(app: &TestApp) -> RegistryClient {
    let auth = Auth::Basic {
        user: PUSHER.0.into(),
        password: PUSHER.1.into(),
    };
    RegistryClient::new(&app.address.to_string(), auth, &[]).expect("client")
}

fn options(platform: Platform) -> BootstrapOptions {
    BootstrapOptions {
        repository: REPOSITORY.into(),
        tag: TAG.into(),
        suite: "bookworm".into(),
        include: vec!["python3".into()],
        platforms: vec![platform],
        mirror: std::env::var("KILN_TEST_DEBIAN_MIRROR")
            .unwrap_or_else(|_| base::DEFAULT_MIRROR.into()),
    }
}

async fn bootstrap(app: &TestApp, platform: Platform) -> BaseImage {
    let work = tempfile::tempdir().expect("temp dir");
    let started = std::time::Instant::now();
    let image = base::bootstrap(&options(platform), &client(app), work.path(), |line| {
        println!("bootstrap: {line}")
    })
    .await
    .unwrap_or_else(|e| panic!("bootstrap failed: {e}\n{e:?}"));
    println!(
        "bootstrap of {platform} took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    image
}

/// Checks the pushed base through the registry, as the native builder will read it.
async fn check_pushed(app: &TestApp, image: &BaseImage, platform: Platform) {
    assert_eq!(
        format!("http://{}", image.reference),
        app.url(&format!("/{REPOSITORY}:{TAG}")),
        "host/repository:tag"
    );
    assert_eq!(image.glibc, "2.36");
    assert_eq!(image.python.as_deref(), Some("3.11"));
    let client = client(app);
    assert_eq!(
        client.tag_digest(REPOSITORY, TAG).await.expect("HEAD"),
        Some(image.digest.clone()),
        "the tag points at the returned index"
    );
    let manifest = base::inspect(&client, REPOSITORY, TAG, platform)
        .await
        .expect("inspect");
    assert_eq!(manifest.layers.len(), 1, "one layer");
    assert_eq!(manifest.config.diff_ids.len(), 1);
    assert_eq!(manifest.glibc.as_deref(), Some("2.36"));
    assert_eq!(manifest.python.as_deref(), Some("3.11"));
    assert_eq!(
        manifest.labels.get(base::LABEL_SUITE).map(String::as_str),
        Some("bookworm")
    );
    assert_eq!(manifest.config.cmd, Some(vec!["/bin/bash".to_owned()]));
    assert_eq!(manifest.config.env_var("LANG"), Some("C.UTF-8"));
    let other = match platform {
        Platform::LinuxAmd64 => Platform::LinuxArm64,
        Platform::LinuxArm64 => Platform::LinuxAmd64,
    };
    assert!(
        matches!(
            base::inspect(&client, REPOSITORY, TAG, other).await,
            Err(base::BaseError::NoPlatform { .. })
        ),
        "a single-platform base has no {other} image"
    );
}

/// Copies the base into containers-storage and runs python3 in it with buildah.
fn run_python(app: &TestApp, platform: Platform) -> String {
    let local = format!(
        "localhost/kiln-test/bootstrapped-{}:{}",
        platform.architecture(),
        std::process::id()
    );
    let copied = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("--override-arch={}", platform.architecture()))
        .arg(format!("docker://{}/{REPOSITORY}:{TAG}", app.address))
        .arg(format!("containers-storage:{local}"))
        .status()
        .expect("skopeo runs");
    assert!(copied.success(), "skopeo copy failed");
    let from = Command::new("buildah")
        .args(["from", "--pull=never", "--quiet"])
        .arg(&local)
        .output()
        .expect("buildah runs");
    assert!(
        from.status.success(),
        "buildah from failed: {}",
        String::from_utf8_lossy(&from.stderr)
    );
    let container = String::from_utf8_lossy(&from.stdout).trim().to_owned();
    let run = Command::new("buildah")
        .args(["run", "--isolation", "chroot"])
        .arg(&container)
        .args([
            "--",
            "python3",
            "-c",
            "import sys; print(sys.version_info[:2])",
        ])
        .output()
        .expect("buildah runs");
    let removed = Command::new("buildah")
        .args(["rm", &container])
        .output()
        .expect("buildah rm runs");
    let untagged = Command::new("buildah")
        .args(["rmi", &local])
        .output()
        .expect("buildah rmi runs");
    assert!(
        run.status.success(),
        "python3 did not run: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(removed.status.success(), "buildah rm failed");
    assert!(untagged.status.success(), "buildah rmi failed");
    String::from_utf8_lossy(&run.stdout).trim().to_owned()
}

/// One amd64 base, checked through the registry and by running it, then bootstrapped again into
/// a fresh registry: the same Debian packages give the same index digest.
#[tokio::test(flavor = "multi_thread")]
async fn bootstraps_a_reproducible_runnable_debian_python_base() {
    let app = TestApp::start().await;
    let image = bootstrap(&app, Platform::LinuxAmd64).await;
    check_pushed(&app, &image, Platform::LinuxAmd64).await;
    assert_eq!(run_python(&app, Platform::LinuxAmd64), "(3, 11)");

    let again = TestApp::start().await;
    let second = bootstrap(&again, Platform::LinuxAmd64).await;
    assert_eq!(
        second.digest, image.digest,
        "bootstrapping twice gives the same index"
    );
}

/// The arm64 base, built under qemu-user-static (binfmt_misc with qemu-aarch64 enabled).
#[tokio::test(flavor = "multi_thread")]
async fn bootstraps_an_arm64_base_under_qemu() {
    let app = TestApp::start().await;
    let image = bootstrap(&app, Platform::LinuxArm64).await;
    check_pushed(&app, &image, Platform::LinuxArm64).await;
    assert_eq!(run_python(&app, Platform::LinuxArm64), "(3, 11)");
}

/// A suite the mirror does not have: the error names the step and ends with mmdebstrap's own
/// last lines, and nothing is pushed.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_mmdebstrap_reports_its_stderr() {
    let app = TestApp::start().await;
    let work = tempfile::tempdir().expect("temp dir");
    let options = BootstrapOptions {
        suite: "no-such-suite".into(),
        ..options(Platform::LinuxAmd64)
    };
    let error = base::bootstrap(&options, &client(&app), work.path(), |_| {})
        .await
        .expect_err("an unknown suite fails");
    let message = error.to_string();
    println!("{message}");
    assert!(matches!(error, base::BaseError::Child { .. }), "{message}");
    assert!(
        message.starts_with("mmdebstrap no-such-suite for linux/amd64 failed"),
        "{message}"
    );
    assert!(message.lines().count() > 1, "no stderr in: {message}");
    assert_eq!(
        client(&app)
            .tag_digest(REPOSITORY, TAG)
            .await
            .expect("HEAD"),
        None
    );
}
