//! Runs a command in an image from kiln's registry, the way a user would check it: copied into
//! buildah's local storage with skopeo, run with `buildah run --isolation chroot` (podman's
//! runtime does not work here), and removed again.

use std::process::Command;

/// Runs `command` in `image` (pulled from the registry into local storage) with buildah.
pub fn run_in_image(image: &str, platform: &str, command: &[&str]) -> String {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let number = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let local = format!("localhost/kiln-native-test:{}-{number}", std::process::id());
    let copied = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--override-arch",
        ])
        .arg(platform.trim_start_matches("linux/"))
        .arg(format!("docker://{image}"))
        .arg(format!("containers-storage:{local}"))
        .output()
        .expect("skopeo runs");
    assert!(
        copied.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
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
