//! Runs a command in an image from kiln's registry, the way a user would check it: copied into
//! buildah's local storage with skopeo, run with `buildah run --isolation chroot` (podman's
//! runtime does not work here), and removed again.

use std::path::Path;
use std::process::Command;

use kiln::build::buildah::{Buildah, BuildahError};
use kiln::spec::Platform;

/// Runs `command` in `image` (pulled from the registry into local storage) with buildah.
pub fn run_in_image(image: &str, platform: &str, command: &[&str]) -> String {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let number = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let local = format!("localhost/kiln-native-test:{}-{number}", std::process::id());
    copy_to_local_storage(image, &local, Some(platform));
    let from = Command::new("buildah")
        .args(["from", "--pull=never", "--quiet", &local])
        .output()
        .expect("buildah from");
    assert!(
        from.status.success(),
        "buildah from: {}",
        String::from_utf8_lossy(&from.stderr)
    );
    let container = String::from_utf8_lossy(&from.stdout).trim().to_owned();
    let run = Command::new("buildah")
        .args(["run", "--isolation", "chroot", &container, "--"])
        .args(command)
        .output()
        .expect("buildah run");
    let _ = Command::new("buildah").args(["rm", &container]).output();
    let _ = Command::new("buildah")
        .args(["rmi", "--force", &local])
        .output();
    assert!(
        run.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// Copies `image` from a registry (plain HTTP allowed) into buildah's local storage as `local`,
/// of `platform`'s architecture when one is given.
pub fn copy_to_local_storage(image: &str, local: &str, platform: Option<&str>) {
    let mut skopeo = Command::new("skopeo");
    skopeo.args(["copy", "--quiet", "--src-tls-verify=false"]);
    if let Some(platform) = platform {
        skopeo
            .arg("--override-arch")
            .arg(platform.trim_start_matches("linux/"));
    }
    let copied = skopeo
        .arg(format!("docker://{image}"))
        .arg(format!("containers-storage:{local}"))
        .output()
        .expect("skopeo runs");
    assert!(
        copied.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
}

/// `buildah bud` of `dockerfile` in `context` as `tag` for linux/amd64: how it ended, and what
/// buildah printed.
pub async fn bud(
    buildah: &Buildah,
    context: &Path,
    dockerfile: &Path,
    tag: &str,
) -> (Result<(), BuildahError>, String) {
    let mut log = String::new();
    let built = buildah
        .build(context, dockerfile, tag, Platform::LinuxAmd64, |line| {
            log.push_str(line);
            log.push('\n');
        })
        .await;
    (built, log)
}
