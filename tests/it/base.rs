//! Base images kiln makes itself, checked as a user would: pushed under the tag, readable by
//! the native builder, runnable, and reproducible. Made from Debian's packages without running
//! any (`kiln base create`, and kiln's defaults on first use), or with mmdebstrap
//! (`kiln base bootstrap`, for bases that need maintainer scripts). Requests that name such a
//! base build on it.

use crate::support::{conda_channel, debian_base, run_image};

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{PUSHER, TestApp};
use conda_channel::{CHANNEL_NAME, CondaChannel};
use debian_base::debian_mirror;
use kiln::base::debian::{DebianBase, create};
use kiln::base::{self, BaseImage, BootstrapOptions};
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient};
use kiln::spec::Platform;
use serde_json::{Value, json};

const REPOSITORY: &str = "kiln/base/debian-python";
const TAG: &str = "bookworm";

fn client(app: &TestApp) -> RegistryClient {
    let auth = Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1));
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
    check_platform(app, image, platform).await;
    let other = match platform {
        Platform::LinuxAmd64 => Platform::LinuxArm64,
        Platform::LinuxArm64 => Platform::LinuxAmd64,
    };
    assert!(
        matches!(
            base::inspect(&client(app), REPOSITORY, TAG, other).await,
            Err(base::BaseError::NoPlatform { .. })
        ),
        "a single-platform base has no {other} image"
    );
}

/// Checks one platform of a pushed base.
async fn check_platform(app: &TestApp, image: &BaseImage, platform: Platform) {
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
}

/// Copies the base into containers-storage and runs python3 in it with buildah.
fn run_python(app: &TestApp, platform: Platform) -> String {
    run(
        app,
        platform,
        &["python3", "-c", "import sys; print(sys.version_info[:2])"],
    )
}

/// Copies the base into containers-storage and runs `command` in it with buildah (arm64
/// through qemu-user: the test runs the image, kiln never does).
fn run(app: &TestApp, platform: Platform, command: &[&str]) -> String {
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
        .arg("--")
        .args(command)
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
        "{command:?} did not run: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(removed.status.success(), "buildah rm failed");
    assert!(untagged.status.success(), "buildah rmi failed");
    String::from_utf8_lossy(&run.stdout).trim().to_owned()
}

/// What a runnable base must do, as one shell script: shells, accounts, processes, time zone,
/// the CA bundle where libssl looks, and `os.system` (which needs `/bin/sh`).
const CHECKLIST: &str = r#"set -e
sh -c 'echo sh ok'
bash -c 'echo bash ok'
grep -qx /bin/sh /etc/shells && grep -qx /usr/bin/bash /etc/shells && echo shells ok
id root
ps -e >/dev/null && echo ps ok
echo 'a b' | awk '{print "awk", $2}'
which sed find gzip >/dev/null && echo tools ok
echo "zone $(date +%Z)"
python3 -c '
import os, ssl, sys
assert os.system("true") == 0
print("certificates", len(ssl.create_default_context().get_ca_certs()))
print("python", "%d.%d" % sys.version_info[:2])
'
"#;

/// kiln's Python base made from Debian's packages for amd64 and arm64 (nothing of the target
/// runs), checked through the registry and by running it, then made again into a fresh
/// registry: the same Debian index gives the same index digest.
#[tokio::test(flavor = "multi_thread")]
async fn makes_a_runnable_reproducible_python_base_from_debian_packages() {
    let base = DebianBase {
        repository: REPOSITORY.into(),
        tag: TAG.into(),
        packages: vec!["python3".into()],
        platforms: vec![Platform::LinuxAmd64, Platform::LinuxArm64],
    };
    let mirror = debian_mirror();
    let app = TestApp::start().await;
    let work = tempfile::tempdir().expect("temp dir");
    let started = std::time::Instant::now();
    let image = create(&base, &mirror, &client(&app), work.path(), |line| {
        println!("create: {line}")
    })
    .await
    .unwrap_or_else(|e| panic!("making the base failed: {e}\n{e:?}"));
    println!(
        "made both platforms in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for platform in [Platform::LinuxAmd64, Platform::LinuxArm64] {
        check_platform(&app, &image, platform).await;
        let output = run(&app, platform, &["bash", "-c", CHECKLIST]);
        println!("{platform}:\n{output}");
        for line in [
            "sh ok",
            "bash ok",
            "shells ok",
            "uid=0(root) gid=0(root) groups=0(root)",
            "ps ok",
            "awk b",
            "tools ok",
            "zone UTC",
            "python 3.11",
        ] {
            assert!(
                output.lines().any(|l| l == line),
                "{platform}: no `{line}` in\n{output}"
            );
        }
        let certificates: usize = output
            .lines()
            .find_map(|l| l.strip_prefix("certificates "))
            .and_then(|n| n.parse().ok())
            .expect("a certificate count");
        assert!(
            certificates > 100,
            "{platform}: {certificates} CA certificates"
        );
    }

    let again = TestApp::start().await;
    let work = tempfile::tempdir().expect("temp dir");
    let second = create(&base, &mirror, &client(&again), work.path(), |_| {})
        .await
        .expect("made again");
    assert_eq!(
        second.digest, image.digest,
        "making the base twice gives the same index"
    );
}

/// `kiln base create` makes a base with an extra Debian package (here jq, with the libraries
/// it depends on) that runs; a package the suite lacks is named in the error.
#[tokio::test(flavor = "multi_thread")]
async fn kiln_base_create_adds_debian_packages() {
    let app = TestApp::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let config = data.path().join("kiln.toml");
    std::fs::write(
        &config,
        format!(
            "registry = \"{}\"\ndata_dir = \"{}\"\n\n[build]\npush_user = \"{}\"\npush_password = \"{}\"\n",
            app.address,
            data.path().join("data").display(),
            PUSHER.0,
            PUSHER.1
        ),
    )
    .expect("config");
    let kiln = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--config")
            .arg(&config)
            .args(["base", "create"])
            .args(args)
            .env_clear()
            .output()
            .expect("kiln runs")
    };
    let made = kiln(&[
        "--name",
        "kiln/base/jq:bookworm",
        "--package",
        "jq",
        "--platform",
        "linux/amd64",
    ]);
    let stderr = String::from_utf8_lossy(&made.stderr);
    assert!(made.status.success(), "kiln base create failed:\n{stderr}");
    let printed = String::from_utf8_lossy(&made.stdout);
    assert!(
        printed.starts_with(&format!("{}/kiln/base/jq:bookworm@sha256:", app.address)),
        "{printed}"
    );
    let output = run_image::run_in_image(
        &format!("{}/kiln/base/jq:bookworm", app.address),
        "linux/amd64",
        &["jq", "-n", "1+1"],
    );
    assert_eq!(output.trim(), "2");

    let missing = kiln(&[
        "--name",
        "kiln/base/nope:bookworm",
        "--package",
        "no-such-package-kiln",
    ]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        stderr.contains("no-such-package-kiln") && stderr.contains("bookworm"),
        "the error names the package and the suite: {stderr}"
    );
}

/// `POST /api/v1/images` with `body`: the status and the answer.
async fn ask(app: &TestApp, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(app.url("/api/v1/images"))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// Asks for an image and waits for its build: the answer and the finished build record.
async fn build(app: &TestApp, body: Value) -> (Value, Value) {
    let (status, answer) = ask(app, body).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["build"]["id"].as_str().expect("a build").to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let build: Value = reqwest::get(app.url(&format!("/api/v1/builds/{id}")))
            .await
            .expect("build record")
            .json()
            .await
            .expect("JSON");
        if build["status"] == "DONE" {
            return (answer, build);
        }
        assert!(
            Instant::now() < deadline,
            "the build did not finish: {build}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A request that names a base made with an extra Debian package builds on it: the image runs
/// both its conda package and the base's `jq`. A base that does not exist, and a pip-only
/// request on a base without python3, fail saying what to do; a base outside `kiln/base/` is
/// refused at once.
#[tokio::test(flavor = "multi_thread")]
async fn requests_build_on_a_base_they_name() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    let channel_url = server.url.clone();
    let app = TestApp::start_with(move |config| {
        config
            .channel_mirrors
            .insert(CHANNEL_NAME.to_owned(), channel_url);
    })
    .await;
    let work = tempfile::tempdir().expect("temp dir");
    let jq = DebianBase {
        repository: "kiln/base/jq".into(),
        tag: TAG.into(),
        packages: vec!["jq".into()],
        platforms: vec![Platform::LinuxAmd64],
    };
    create(&jq, &debian_mirror(), &client(&app), work.path(), |line| {
        println!("base: {line}")
    })
    .await
    .expect("the jq base is made");

    let (answer, done) = build(
        &app,
        json!({
            "packages": ["kiln-hello=2.0"],
            "channels": [CHANNEL_NAME],
            "base": "kiln/base/jq:bookworm",
        }),
    )
    .await;
    assert_eq!(done["succeeded"], true, "{done}");
    assert!(
        done["request"]
            .as_str()
            .is_some_and(|request| request.ends_with(r#""base":"kiln/base/jq:bookworm"}"#)),
        "the stored request names the base: {done}"
    );
    let image = answer["image"].as_str().expect("image");
    let output = run_image::run_in_image(
        image,
        "linux/amd64",
        &["sh", "-c", "kiln-hello && jq -n 1+1"],
    );
    assert_eq!(output, "hello from kiln-hello 2.0 on x86_64\n2\n");

    let (_, missing) = build(
        &app,
        json!({
            "packages": ["kiln-hello=2.0"],
            "channels": [CHANNEL_NAME],
            "base": "kiln/base/nope:bookworm",
        }),
    )
    .await;
    assert_eq!(missing["succeeded"], false, "{missing}");
    let reason = missing["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("/kiln/base/nope:bookworm named in the request does not exist")
            && reason.contains("`kiln base create --name kiln/base/nope:bookworm --package"),
        "{reason}"
    );

    let (_, pip_only) = build(
        &app,
        json!({"packages": ["pip:idna==3.10"], "base": "kiln/base/jq:bookworm"}),
    )
    .await;
    assert_eq!(pip_only["succeeded"], false, "{pip_only}");
    let reason = pip_only["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with(
            "the base image kiln/base/jq:bookworm named in the request has no python3"
        ),
        "{reason}"
    );

    for refused in [
        "docker.io/library/debian:12",
        "library/samtools:1.21",
        "kiln/base/jq",
    ] {
        let (status, answer) = ask(
            &app,
            json!({"packages": ["kiln-hello=2.0"], "base": refused}),
        )
        .await;
        assert_eq!(status, 400, "{refused}: {answer}");
        let message = answer["message"].as_str().expect("a message");
        assert!(
            message.starts_with(&format!("`base`: the base image `{refused}` was refused: "))
                && message.contains("kiln/base/NAME:TAG"),
            "{message}"
        );
    }
}

/// One amd64 base bootstrapped with mmdebstrap, checked through the registry and by running it.
#[tokio::test(flavor = "multi_thread")]
async fn bootstraps_a_runnable_debian_python_base_with_mmdebstrap() {
    let app = TestApp::start().await;
    let image = bootstrap(&app, Platform::LinuxAmd64).await;
    check_pushed(&app, &image, Platform::LinuxAmd64).await;
    assert_eq!(run_python(&app, Platform::LinuxAmd64), "(3, 11)");
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

/// Fifty builds finding kiln's base missing at once: one makes it, the others wait for it and
/// find it made.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_uses_make_the_base_once() {
    let app = TestApp::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    // The tests' download cache, so only the single flight is under test here.
    std::fs::create_dir_all(data.path().join("cache")).expect("cache dir");
    let shared = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-debian-cache");
    std::fs::create_dir_all(&shared).expect("shared cache");
    std::os::unix::fs::symlink(&shared, data.path().join("cache/debian")).expect("link");
    let config = kiln::config::Config {
        data_dir: data.path().to_owned(),
        ..kiln::config::Config::default()
    };
    let maker = std::sync::Arc::new(
        kiln::base::debian::BaseMaker::from_config(
            &config,
            kiln::base::debian::http_client().expect("client"),
            client(&app),
        )
        .expect("maker"),
    );
    let base = DebianBase {
        repository: "kiln/base/debian".into(),
        tag: TAG.into(),
        packages: Vec::new(),
        platforms: vec![Platform::LinuxAmd64],
    };
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (maker, base) = (maker.clone(), base.clone());
        requests.spawn(async move { maker.ensure(&base, |_| {}).await });
    }
    let mut made = 0;
    while let Some(outcome) = requests.join_next().await {
        if outcome.expect("joined").expect("ensured").is_some() {
            made += 1;
        }
    }
    assert_eq!(made, 1, "the base is made once");
    assert!(
        client(&app)
            .tag_digest("kiln/base/debian", TAG)
            .await
            .expect("HEAD")
            .is_some()
    );
}
