//! kiln's own image and its Kubernetes manifests, as an operator would use them.
//!
//! The image: the top-level `Dockerfile` built with `buildah bud` on bases kiln made (no Docker
//! Hub here): the runtime base is a Debian base kiln assembles with the Dockerfile's runtime
//! packages, uv comes from an image holding this host's uv, and kiln is the test binary, taken
//! through the `prebuilt` stage (compiling kiln inside the build would take CI far too long).
//! The manifests: `deploy/kubernetes/check`, a Go program using Kubernetes' own API types,
//! decodes them strictly, and refuses a manifest with an unknown field or a dangling reference.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use kiln::base::debian::{DebianBase, create};
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient};
use kiln::spec::Platform;

use sha2::{Digest as _, Sha256};

use crate::support::debian_base::{self, DEBIAN_TAG};
use crate::support::{PUSHER, TestApp};

fn repository_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The packages the Dockerfile's runtime stage wants (its `RUNTIME_PACKAGES` default), read
/// from the Dockerfile so the test's base and the image cannot drift apart.
fn runtime_packages(dockerfile: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("ARG RUNTIME_PACKAGES="))
        .expect("the Dockerfile has ARG RUNTIME_PACKAGES=\"…\"");
    line.trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Where the test's runtime base goes in the test app's registry.
const RUNTIME_REPOSITORY: &str = "kiln/base/runtime";

/// Pushes the runtime base, Debian bookworm (amd64) with `packages`, into `client`'s registry:
/// made by kiln from Debian's packages the first time, and replayed from a copy under `target/`
/// after (like the other tests' bases), keyed by the package list so a changed Dockerfile
/// makes a new one.
async fn push_runtime_base(client: &RegistryClient, packages: Vec<String>) {
    let key = hex::encode(Sha256::digest(packages.join(" ").as_bytes()));
    let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln-deploy-runtime-{}", &key[..16]));
    if saved.join("index.json").is_file() {
        debian_base::replay(client, RUNTIME_REPOSITORY, &saved).await;
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    create(
        &DebianBase {
            repository: RUNTIME_REPOSITORY.to_owned(),
            tag: DEBIAN_TAG.to_owned(),
            packages,
            platforms: vec![Platform::LinuxAmd64],
        },
        &debian_base::debian_mirror(),
        client,
        work.path(),
        |line| println!("base: {line}"),
    )
    .await
    .expect("kiln makes the runtime base");
    debian_base::save(client, RUNTIME_REPOSITORY, &saved).await;
}

/// Runs a command, panicking with its output when it fails.
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?} does not start: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Images and containers in buildah's local storage that this test made, removed at the end
/// whether it passed or not.
#[derive(Default)]
struct LocalStorage {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for LocalStorage {
    fn drop(&mut self) {
        for container in &self.containers {
            let _ = Command::new("buildah").args(["rm", container]).output();
        }
        for image in &self.images {
            let _ = Command::new("buildah")
                .args(["rmi", "--force", image])
                .output();
        }
    }
}

/// An image in local storage holding this host's uv at `/uv`, where Astral's uv image has it:
/// what the Dockerfile's `UV_IMAGE` names. The binary pip installed (scripts/test installs uv
/// with pip) rather than what `uv` on PATH is, which may be a shell shim (pyenv).
fn uv_image(name: &str, storage: &mut LocalStorage) {
    let uv = stdout(&run(Command::new("sh").args([
        "-c",
        "python3 -c 'import uv; print(uv.find_uv_bin())' 2>/dev/null || command -v uv",
    ])));
    let container = stdout(&run(Command::new("buildah").args(["from", "scratch"])));
    storage.containers.push(container.clone());
    run(Command::new("buildah").args(["copy", "--chmod", "0755", &container, &uv, "/uv"]));
    run(Command::new("buildah").args(["commit", "--quiet", &container, name]));
    storage.images.push(name.to_owned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kilns_image_builds_on_kiln_made_bases_and_serves() {
    let started = std::time::Instant::now();
    let dockerfile_path = repository_root().join("Dockerfile");
    let dockerfile = std::fs::read_to_string(&dockerfile_path).expect("the Dockerfile");
    let mut storage = LocalStorage::default();

    // The runtime base: Debian bookworm with the Dockerfile's packages, made by kiln.
    let app = TestApp::start().await;
    let client = RegistryClient::new(
        &app.address.to_string(),
        Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1)),
        &[],
    )
    .expect("client");
    push_runtime_base(&client, runtime_packages(&dockerfile)).await;
    let runtime_image = format!("{}/{RUNTIME_REPOSITORY}:{DEBIAN_TAG}", app.address);
    let based = started.elapsed();

    let tag = std::process::id();
    let uv = format!("localhost/kiln-deploy-test-uv:{tag}");
    uv_image(&uv, &mut storage);

    // The build context of the `prebuilt` stage: the test binary, and nothing else.
    let context = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("context dir");
    let binary = context.path().join("kiln");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_kiln"), &binary).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &binary).expect("kiln copied");
    }

    let image = format!("localhost/kiln-deploy-test:{tag}");
    storage.images.push(image.clone());
    storage.images.push(runtime_image.clone());
    let built = run(Command::new("buildah")
        .args(["bud", "--isolation", "chroot", "--tls-verify=false"])
        .args(["--build-arg", "KILN_FROM=prebuilt"])
        .arg("--build-arg")
        .arg(format!("RUNTIME_IMAGE={runtime_image}"))
        .arg("--build-arg")
        .arg(format!("UV_IMAGE={uv}"))
        .args(["--build-arg", "KILN_BINARY=kiln"])
        .arg("--file")
        .arg(&dockerfile_path)
        .args(["--tag", &image])
        .arg(context.path()));
    let log = String::from_utf8_lossy(&built.stdout);
    assert!(
        log.contains("the base already holds:"),
        "the runtime stage installed packages a kiln-made base already has:\n{log}"
    );
    assert!(
        !log.contains("cargo build"),
        "the prebuilt stage compiled kiln:\n{log}"
    );
    let image_built = started.elapsed();

    // The image's configuration: unprivileged by default, tini before kiln, kiln serving.
    let inspected: serde_json::Value = serde_json::from_slice(
        &run(Command::new("buildah").args(["inspect", "--type", "image", &image])).stdout,
    )
    .expect("buildah inspect prints JSON");
    let config = &inspected["OCIv1"]["config"];
    assert_eq!(config["User"], "10001:10001", "{config}");
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]), "{config}");
    let entrypoint: Vec<String> =
        serde_json::from_value(config["Entrypoint"].clone()).expect("an entrypoint");
    assert_eq!(entrypoint, ["/usr/bin/tini", "--", "/usr/local/bin/kiln"]);

    let container = stdout(&run(Command::new("buildah").args([
        "from",
        "--pull=never",
        "--quiet",
        &image,
    ])));
    storage.containers.push(container.clone());
    let in_image = |command: &[&str]| {
        stdout(&run(Command::new("buildah")
            .args(["run", "--isolation", "chroot", &container, "--"])
            .args(command)))
    };
    let through_entrypoint = |arguments: &[&str]| {
        let mut command: Vec<&str> = entrypoint.iter().map(String::as_str).collect();
        command.extend_from_slice(arguments);
        in_image(&command)
    };
    assert_eq!(
        through_entrypoint(&["--version"]),
        format!("kiln {}", env!("CARGO_PKG_VERSION"))
    );
    let worker_help = through_entrypoint(&["serve", "--role", "worker", "--help"]);
    assert!(
        worker_help.contains("--role"),
        "kiln serve --help in the image:\n{worker_help}"
    );
    assert_eq!(in_image(&["id", "-u"]), "10001", "the image runs as kiln");
    // The data directory, kiln's alone before kiln first runs.
    assert_eq!(
        in_image(&["stat", "-c", "%u %a", "/var/lib/kiln"]),
        "10001 700"
    );
    // The image's own command serves (as kiln, in its data directory) and stops cleanly when
    // tini passes SIGTERM on; bash's /dev/tcp asks /health, as the image has no HTTP client.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let command = format!(
        "{} {}",
        entrypoint.join(" "),
        config["Cmd"][0].as_str().expect("a command")
    );
    let served = in_image(&[
        "bash",
        "-c",
        &format!(
            "KILN_LISTEN=127.0.0.1:{port} {command} >/tmp/kiln.log 2>&1 & pid=$!
             for attempt in $(seq 300); do
                 if answer=$( (exec 3<>/dev/tcp/127.0.0.1/{port} &&
                         printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 &&
                         head -n 1 <&3) 2>/dev/null); then
                     echo \"$answer\"; break
                 fi
                 sleep 0.1
             done
             kill -TERM $pid; wait $pid; echo \"stopped: $?\"; echo ---; cat /tmp/kiln.log"
        ),
    ]);
    let (answers, log) = served.split_once("---").expect("the script's output");
    assert_eq!(
        answers.trim(),
        "HTTP/1.0 200 OK\r\nstopped: 0",
        "kiln serve in the image; its log:\n{log}"
    );
    // What builds run, each starting in the image with its libraries.
    assert!(in_image(&["uv", "--version"]).starts_with("uv "));
    assert!(in_image(&["buildah", "--version"]).starts_with("buildah version "));
    assert!(in_image(&["mksquashfs", "-version"]).contains("mksquashfs version"));
    assert!(in_image(&["runc", "--version"]).starts_with("runc version"));
    // The sandbox user with its subordinate ids.
    assert_eq!(
        in_image(&["grep", "^kiln-build:", "/etc/subuid"]),
        "kiln-build:100000:65536"
    );
    println!(
        "deploy image: runtime base ready in {:.1} s, image built in {:.1} s, checked in {:.1} s",
        based.as_secs_f64(),
        (image_built - based).as_secs_f64(),
        (started.elapsed() - image_built).as_secs_f64()
    );
}

/// The manifest checker, built with Go into `target/tools` (Go's build cache makes a rebuild of
/// unchanged sources instant, so it is built once per test binary and never stale).
fn manifest_checker() -> &'static Path {
    static CHECKER: OnceLock<PathBuf> = OnceLock::new();
    CHECKER.get_or_init(|| {
        let out = repository_root().join("target/tools/kiln-manifest-check");
        run(Command::new("go")
            // No VCS stamp: the checkout may be a git worktree, or have no git at all.
            .args(["build", "-trimpath", "-buildvcs=false", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(repository_root().join("deploy/kubernetes/check")));
        out
    })
}

/// What the checker says about `dir`: whether it accepted it, and its output.
fn check_manifests(dir: &Path) -> (bool, String) {
    let output = Command::new(manifest_checker())
        .arg(dir)
        .output()
        .expect("the checker runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A copy of `deploy/kubernetes` (its top-level files) with `from` replaced by `to` in `file`.
fn changed_copy(file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let source = repository_root().join("deploy/kubernetes");
    let copy = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(&source).expect("deploy/kubernetes") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("file type").is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copied");
        }
    }
    let path = copy.path().join(file);
    let text = std::fs::read_to_string(&path).expect("manifest");
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("changed");
    copy
}

#[test]
fn the_kubernetes_manifests_decode_strictly() {
    for dir in ["deploy/kubernetes", "deploy/kubernetes/local-registry"] {
        let (accepted, output) = check_manifests(&repository_root().join(dir));
        assert!(accepted, "{dir} is refused:\n{output}");
        assert!(output.contains("decoded strictly"), "{output}");
    }

    // A misspelt field is an error, named with its path, not silently dropped.
    let typo = changed_copy("api.yaml", "readinessProbe:", "readinessProbes:");
    let (accepted, output) = check_manifests(typo.path());
    assert!(!accepted, "an unknown field was accepted:\n{output}");
    assert!(
        output.contains(r#"unknown field "spec.template.spec.containers[0].readinessProbes""#),
        "{output}"
    );

    // A reference to a Secret key nobody defines, which would fail only when a pod starts.
    let dangling = changed_copy(
        "worker.yaml",
        "key: KILN_DATABASE_URL",
        "key: KILN_DATABASE_URI",
    );
    let (accepted, output) = check_manifests(dangling.path());
    assert!(!accepted, "a dangling reference was accepted:\n{output}");
    assert!(
        output.contains(r#"names key "KILN_DATABASE_URI" of Secret "kiln""#),
        "{output}"
    );
}
