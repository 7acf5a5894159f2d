//! Remote builds the way SingularityCE users make them: `scs-build` (the Sylabs build client)
//! sends a definition file to kiln, streams the build log, downloads the SIF through the library
//! API and checks its checksum; siftool reads the file, and the root file system holds what the
//! definition's `%files`, `%post` (and its `$SINGULARITY_ENVIRONMENT`), `%environment`,
//! `%runscript`, `%labels` and `%help` made, for amd64 and (under qemu-user) arm64; a second
//! definition builds on the first SIF with `Bootstrap: localimage`. Then what clients see when it
//! goes wrong: no token, a definition kiln refuses, a missing base, a failing `%post`, and a
//! cancelled build, over the websocket and the status call as `singularity build --remote`
//! reads them.

use crate::support::{debian_base, forms, go_tools};

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{PUSHER, TestApp};
use base64::Engine as _;
use debian_base::{DEBIAN_TAG, push_debian_python_base};
use forms::signup_token;
use futures_util::StreamExt as _;
use go_tools::tool;
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const BASE_REPOSITORY: &str = "kiln/base/debian";

/// kiln with the Debian base in its registry, and a token for `alice`.
async fn start() -> (TestApp, String) {
    let app = TestApp::start().await;
    let pusher = RegistryClient::new(
        &app.address.to_string(),
        Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1)),
        &[],
    )
    .expect("registry client");
    push_debian_python_base(&pusher, BASE_REPOSITORY).await;
    let token = token_for(&app, "alice").await;
    (app, token)
}

/// Gets a token from the `/auth/tokens` page, as a user would.
async fn token_for(app: &TestApp, user: &str) -> String {
    signup_token(&app.url("/auth/tokens"), user).await
}

/// The files the client's directory holds for [`definition`]'s `%files`.
pub(crate) fn write_client_files(dir: &Path) {
    std::fs::write(dir.join("greeting.txt"), "hello from the client\n").expect("write");
    std::fs::create_dir_all(dir.join("scripts/lib")).expect("mkdir");
    std::fs::write(dir.join("scripts/lib/hello.sh"), "echo hello\n").expect("write");
}

/// The definition every build here starts from: kiln's Debian base, `%files` copies from the
/// client's directory (a file; a directory into an existing directory, where SingularityCE's
/// `cp -r` nests it, and to a new path), and the sections kiln writes into the SIF.
fn definition(app: &TestApp, post: &str) -> String {
    format!(
        "Bootstrap: docker\n\
         From: {}/{BASE_REPOSITORY}:{DEBIAN_TAG}\n\
         \n\
         %files\n    greeting.txt /opt/greeting.txt\n    scripts /opt\n    scripts /srv/tools\n\
         \n\
         %post\n{post}\n\
         \n\
         %environment\n    export KILN_GREETING=\"hello from kiln\"\n\
         \n\
         %runscript\n    echo \"$KILN_GREETING\"; cat /opt/built.txt /opt/greeting.txt\n\
         \n\
         %labels\n    Maintainer alice\n    Version 1.0\n\
         \n\
         %help\n    Greets, and says how it was built.\n",
        app.address
    )
}

/// `scs-build build` against kiln in `dir`, with `token` (none when empty).
fn scs_build(app: &TestApp, dir: &Path, token: &str, args: &[&str]) -> Command {
    let mut command = Command::new(tool("scs-build"));
    command
        .current_dir(dir)
        .env_remove("SYLABS_AUTH_TOKEN")
        .args(["build", "--url", &app.url("")]);
    if !token.is_empty() {
        command.args(["--auth-token", token]);
    }
    command.args(args);
    command
}

pub(crate) fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?} could not start: {err}"));
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "{command:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// The root file system of `sif`, unpacked as the runtime would mount it, in `<dir>/root`.
pub(crate) fn unpack(sif: &Path) -> tempfile::TempDir {
    let data = std::fs::read(sif).expect("read the SIF");
    let squashfs_at = data
        .windows(4)
        .position(|w| w == b"hsqs")
        .expect("a squashfs partition");
    let dir = tempfile::tempdir().expect("temp dir");
    let squashfs = dir.path().join("rootfs.squashfs");
    std::fs::write(&squashfs, &data[squashfs_at..]).expect("write the partition");
    run(Command::new("unsquashfs")
        .args(["-no-xattrs", "-d"])
        .arg(dir.path().join("root"))
        .arg(&squashfs));
    dir
}

/// What a user checks of a SIF built remotely for `arch` (`uname -m` inside).
fn check_sif(sif: &Path, sent: &str, arch: &str, machine: &str) {
    let list = run(Command::new(tool("siftool")).args(["list"]).arg(sif));
    assert!(list.contains("Def.FILE"), "{list}");
    assert!(
        list.contains(&format!("FS (Squashfs/*System/{arch})")),
        "{list}"
    );
    let definition_id = list
        .lines()
        .find(|line| line.contains("Def.FILE"))
        .and_then(|line| line.split('|').next())
        .map(|id| id.trim().to_owned())
        .expect("a definition descriptor");
    let stored = run(Command::new(tool("siftool"))
        .args(["dump", &definition_id])
        .arg(sif));
    assert_eq!(stored, sent, "the SIF holds the definition that was sent");

    let dir = unpack(sif);
    let root = dir.path().join("root");
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
    };
    assert_eq!(read("opt/built.txt"), "built by kiln\n");
    assert_eq!(read("opt/greeting.txt"), "hello from the client\n");
    assert_eq!(read("opt/scripts/lib/hello.sh"), "echo hello\n");
    assert_eq!(read("srv/tools/lib/hello.sh"), "echo hello\n");
    assert!(
        !root.join(".kiln-files").exists(),
        "the staging directory is removed"
    );
    assert_eq!(read("opt/machine.txt").trim(), machine);
    assert!(
        read(".singularity.d/env/90-environment.sh")
            .contains("export KILN_GREETING=\"hello from kiln\"")
    );
    assert_eq!(read(".singularity.d/Singularity"), sent);
    assert!(read(".singularity.d/runscript.help").contains("Greets"));
    let labels: Value = serde_json::from_str(&read(".singularity.d/labels.json")).expect("JSON");
    assert_eq!(labels["Maintainer"], "alice");
    assert_eq!(labels["Version"], "1.0");
    assert_eq!(labels["org.label-schema.build-arch"], arch);

    // What %post appended to $SINGULARITY_ENVIRONMENT is sourced at run time.
    assert_eq!(
        read(".singularity.d/env/91-environment.sh"),
        format!("export KILN_POST_MACHINE={machine}\n")
    );

    // `singularity run` and `exec`: the environment sourced, then the command, inside the root.
    let ran = run(Command::new("chroot")
        .arg(&root)
        .arg("/.singularity.d/actions/run"));
    assert_eq!(
        ran,
        "hello from kiln\nbuilt by kiln\nhello from the client\n"
    );
    let exported = run(Command::new("chroot").arg(&root).args([
        "/.singularity.d/actions/exec",
        "/bin/sh",
        "-c",
        "echo \"$KILN_POST_MACHINE\"",
    ]));
    assert_eq!(exported.trim(), machine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scs_build_builds_a_definition_for_amd64_and_arm64() {
    let (app, token) = start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    write_client_files(dir.path());
    let sent = definition(
        &app,
        "    echo 'built by kiln' > /opt/built.txt\n    uname -m > /opt/machine.txt\n    \
         echo \"export KILN_POST_MACHINE=$(uname -m)\" >> \"$SINGULARITY_ENVIRONMENT\"",
    );
    std::fs::write(dir.path().join("app.def"), &sent).expect("write the definition");

    let started = Instant::now();
    let scs = dir.path().to_owned();
    let (app_url, token2) = (app.url(""), token.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(tool("scs-build"))
            .current_dir(&scs)
            .env_remove("SYLABS_AUTH_TOKEN")
            .args(["build", "--url", &app_url, "--auth-token", &token2])
            .args(["--arch", "amd64,arm64", "app.def", "app.sif"])
            .output()
            .expect("scs-build runs")
    })
    .await
    .expect("scs-build finished");
    let (stdout, stderr) = text(&output);
    println!("scs-build took {:.1} s", started.elapsed().as_secs_f64());
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // The build log streamed to the client: buildah's steps and the %post trace.
    assert!(stdout.contains("+ echo built by kiln"), "{stdout}");
    assert!(
        stdout.contains("pushed library://alice/remote-builds/rb-"),
        "{stdout}"
    );
    // Each SIF got an SBOM of the Debian packages its layers hold, and no lock.
    let sboms: Vec<u32> = stdout
        .split("attached the SBOM (0 conda packages, 0 wheels, ")
        .skip(1)
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect();
    assert!(
        sboms.len() == 2 && sboms.iter().all(|&debian| debian > 50),
        "{sboms:?}\n{stdout}"
    );
    assert_eq!(
        stderr
            .matches("Image checksum verified successfully.")
            .count(),
        2,
        "{stderr}"
    );
    check_sif(&dir.path().join("app.sif-amd64"), &sent, "amd64", "x86_64");
    check_sif(&dir.path().join("app.sif-arm64"), &sent, "arm64", "aarch64");

    // The amd64 SIF, now in kiln's library, is the base of the next definition.
    let built = stdout
        .split("pushed library://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the log names the library image")
        .to_owned();
    let layered = format!(
        "Bootstrap: localimage\nFrom: {built}\n\n%post\n    cat /opt/built.txt > /opt/again.txt\n\n\
         %runscript\n    cat /opt/again.txt\n"
    );
    std::fs::write(dir.path().join("layered.def"), &layered).expect("write");
    let output = scs_build(
        &app,
        dir.path(),
        &token,
        &["--arch", "amd64", "layered.def", "layered.sif"],
    )
    .output()
    .expect("scs-build runs");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("building on the SIF {built}")),
        "{stdout}"
    );
    let unpacked = unpack(&dir.path().join("layered.sif"));
    let root = unpacked.path().join("root");
    let read = |path: &str| std::fs::read_to_string(root.join(path)).expect(path);
    assert_eq!(read("opt/again.txt"), "built by kiln\n");
    assert_eq!(read("opt/greeting.txt"), "hello from the client\n");
    assert_eq!(read(".singularity.d/Singularity"), layered);
    assert_eq!(
        read(".singularity.d/env/91-environment.sh"),
        "export KILN_POST_MACHINE=x86_64\n",
        "the base SIF's %post exports carry over"
    );
    let ran = run(Command::new("chroot")
        .arg(&root)
        .args(["/.singularity.d/runscript"]));
    assert_eq!(ran, "built by kiln\n");
}

/// A client's request to kiln's build service.
fn api(app: &TestApp, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
    let request = reqwest::Client::new().request(method, app.url(path));
    if token.is_empty() {
        request
    } else {
        // The build client's spelling of the scheme.
        request.header("Authorization", format!("BEARER {token}"))
    }
}

/// Submits `definition` as `singularity build --remote` does (it parses locally and never
/// asks kiln to), returning the build info.
async fn submit(app: &TestApp, token: &str, definition: &str) -> Value {
    let body = json!({
        "definitionRaw": base64::engine::general_purpose::STANDARD.encode(definition),
        "libraryRef": "",
        "libraryURL": app.url(""),
        "builderRequirements": {"arch": "amd64"},
        "workingDir": "/home/alice",
    });
    let response = api(app, reqwest::Method::POST, "/v1/build", token)
        .json(&body)
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 200);
    let info: Value = response.json().await.expect("JSON");
    assert_eq!(info["data"]["isComplete"], false);
    info["data"].clone()
}

/// Reads the build's websocket to its end: the text it sent and how it closed.
async fn follow(app: &TestApp, token: &str, id: &str) -> (String, Option<CloseCode>) {
    let mut request = format!("ws://{}/v1/build-ws/{id}", app.address)
        .into_client_request()
        .expect("ws request");
    request.headers_mut().insert(
        "Authorization",
        format!("BEARER {token}").parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket handshake");
    let mut log = String::new();
    while let Some(message) = socket.next().await {
        match message.expect("websocket message") {
            Message::Text(text) => log.push_str(&text),
            Message::Close(frame) => return (log, frame.map(|f| f.code)),
            _ => {}
        }
    }
    (log, None)
}

async fn status(app: &TestApp, token: &str, id: &str) -> Value {
    let response = api(app, reqwest::Method::GET, &format!("/v1/build/{id}"), token)
        .send()
        .await
        .expect("status");
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.expect("JSON")["data"].clone()
}

/// A failed build as `singularity build --remote` sees it: the log says why and closes with
/// 1000, then the status is complete with no image size.
async fn assert_failed(app: &TestApp, token: &str, id: &str, why: &str) -> String {
    let (log, close) = follow(app, token, id).await;
    assert_eq!(close, Some(CloseCode::Normal), "{log}");
    assert!(log.contains(why), "the log names {why:?}:\n{log}");
    let info = status(app, token, id).await;
    assert_eq!(info["isComplete"], true, "{info}");
    assert!(info.get("imageSize").is_none(), "{info}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_end_as_the_clients_expect() {
    let (app, token) = start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    write_client_files(dir.path());
    let good = definition(&app, "    echo 'built by kiln' > /opt/built.txt");
    std::fs::write(dir.path().join("app.def"), &good).expect("write");

    // No token: refused before anything is built, saying where to get one.
    let output = scs_build(&app, dir.path(), "", &["app.def", "app.sif"])
        .output()
        .expect("scs-build runs");
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("/auth/tokens"), "{stderr}");
    let response = api(&app, reqwest::Method::POST, "/v1/build", "")
        .json(&json!({"definitionRaw": "", "libraryRef": ""}))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 401);
    let envelope: Value = response.json().await.expect("JSON");
    assert_eq!(envelope["error"]["code"], 401);

    // A section kiln cannot honor: refused when submitted, naming the section, before any
    // build, for scs-build and for singularity (which submits without asking kiln to parse
    // first) alike.
    let setup = good.replace(
        "%post\n",
        "%setup\n    touch ${SINGULARITY_ROOTFS}/x\n\n%post\n",
    );
    std::fs::write(dir.path().join("setup.def"), &setup).expect("write");
    let output = scs_build(&app, dir.path(), &token, &["setup.def", "setup.sif"])
        .output()
        .expect("scs-build runs");
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("the %setup section at line 9 is not supported"),
        "{stdout}\n{stderr}"
    );
    let response = api(&app, reqwest::Method::POST, "/v1/build", &token)
        .json(&json!({
            "definitionRaw": base64::engine::general_purpose::STANDARD.encode(&setup),
            "libraryRef": "",
        }))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 400);
    let envelope: Value = response.json().await.expect("JSON");
    assert!(
        envelope["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("%setup")),
        "{envelope}"
    );

    // A build that fails: its base image is not in kiln's registry. The log says so and the
    // build is alice's alone.
    let missing = format!(
        "Bootstrap: docker\nFrom: {}/kiln/no-such-base:1\n\n%post\n    echo kiln-private-marker\n",
        app.address
    );
    let build = submit(&app, &token, &missing).await;
    let id = build["id"].as_str().expect("id");
    assert!(
        build["libraryRef"]
            .as_str()
            .is_some_and(|r| r.starts_with("library://alice/remote-builds/rb-"))
    );
    assert_failed(&app, &token, id, "no-such-base").await;
    // Connecting again after the end replays the whole log.
    let (again, close) = follow(&app, &token, id).await;
    assert_eq!(close, Some(CloseCode::Normal));
    assert!(again.contains("no-such-base"), "{again}");
    // Someone else's token sees no such build.
    let bob = token_for(&app, "bob").await;
    let response = api(&app, reqwest::Method::GET, &format!("/v1/build/{id}"), &bob)
        .send()
        .await
        .expect("status");
    assert_eq!(response.status(), 404);
    // Nor do the public build pages and APIs, which answer anyone who has an id.
    for path in [
        format!("/api/v1/builds/{id}"),
        format!("/api/v1/builds/{id}/log"),
        format!("/v1alpha1/builds/{id}"),
        format!("/v1alpha1/builds/{id}/logs"),
        format!("/view/builds/{id}"),
    ] {
        let response = reqwest::get(app.url(&path)).await.expect("GET");
        assert_eq!(response.status(), 404, "{path}");
        let body = response.text().await.expect("body");
        assert!(
            !body.contains("kiln-private-marker"),
            "{path} shows the definition: {body}"
        );
    }

    // A definition that is not base64, and one for an architecture kiln does not build.
    let response = api(&app, reqwest::Method::POST, "/v1/build", &token)
        .json(&json!({"definitionRaw": "not base64!", "libraryRef": ""}))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 400);
    let message = response.json::<Value>().await.expect("JSON")["error"]["message"].clone();
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.contains("definitionRaw")),
        "{message}"
    );

    // A failing %post: the client streams the failure and reports the build failed.
    let failing = definition(&app, "    echo 'about to fail'\n    exit 3");
    std::fs::write(dir.path().join("failing.def"), &failing).expect("write");
    let output = scs_build(&app, dir.path(), &token, &["failing.def", "failing.sif"])
        .output()
        .expect("scs-build runs");
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("+ exit 3"), "{stdout}");
    assert!(stdout.contains("build failed"), "{stdout}");
    assert!(stderr.contains("failed to build image"), "{stderr}");
    assert!(!dir.path().join("failing.sif").exists());

    // Cancelled mid-%post: scs-build on Ctrl-C asks kiln to cancel; the build ends at once,
    // its processes gone.
    let slow = definition(&app, "    echo 'sleeping'\n    sleep 271");
    std::fs::write(dir.path().join("slow.def"), &slow).expect("write");
    let mut child = scs_build(&app, dir.path(), &token, &["slow.def", "slow.sif"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scs-build starts");
    let stdout = child.stdout.take().expect("stdout");
    let saw_sleep = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.expect("line");
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("+ sleep 271") {
                // Keep draining so scs-build never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                return (true, seen);
            }
        }
        (false, seen)
    })
    .await
    .expect("reader");
    assert!(saw_sleep.0, "the %post never started:\n{}", saw_sleep.1);
    let cancelled_at = Instant::now();
    run(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("waited")
        .expect("scs-build exits");
    assert!(!output.status.success());
    // The log's first line names the build.
    let builds = saw_sleep
        .1
        .lines()
        .find_map(|line| line.strip_prefix("build ")?.strip_suffix(" started"))
        .expect("the log names the build")
        .to_owned();
    let info = status(&app, &token, &builds).await;
    assert_eq!(info["isComplete"], true, "{info}");
    assert!(info.get("imageSize").is_none(), "{info}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(30),
        "cancelling took {:?}",
        cancelled_at.elapsed()
    );
    // The jail gives buildah a grace period to stop its step, then kills what is left: the
    // step is gone within it, not necessarily the moment the client has exited.
    let gone_by = Instant::now() + Duration::from_secs(30);
    loop {
        let leftover = Command::new("pgrep")
            .args(["-f", "sleep 271"])
            .output()
            .expect("pgrep");
        if !leftover.status.success() {
            break;
        }
        assert!(
            Instant::now() < gone_by,
            "the cancelled build's processes are gone: {}",
            String::from_utf8_lossy(&leftover.stdout)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let response = api(
        &app,
        reqwest::Method::PUT,
        &format!("/v1/build/{builds}/_cancel"),
        &token,
    )
    .send()
    .await
    .expect("cancel");
    assert_eq!(
        response.status(),
        409,
        "a finished build cannot be cancelled"
    );
}

#[tokio::test]
async fn each_submission_is_a_new_build_within_the_daily_allowance() {
    let app = TestApp::start_with(|config| {
        config.api.user_builds_per_day = 2;
        config.api.tokens = vec!["operator-secret".into()];
        // A loopback registry kiln may pull from only because it is listed.
        config.insecure_registries = vec!["127.0.0.1:1".into()];
    })
    .await;
    let token = token_for(&app, "carol").await;
    let definition = "Bootstrap: docker\nFrom: 127.0.0.1:1/none:latest\n";
    // Two submissions of one definition are two builds (remote builds are never joined).
    let first = submit(&app, &token, definition).await;
    let second = submit(&app, &token, definition).await;
    assert_ne!(first["id"], second["id"]);
    assert_ne!(first["libraryRef"], second["libraryRef"]);

    // The third of the day is refused, in the library's envelope, saying when it renews.
    let body = json!({
        "definitionRaw": base64::engine::general_purpose::STANDARD.encode(definition),
        "libraryRef": "",
    });
    let response = api(&app, reqwest::Method::POST, "/v1/build", &token)
        .json(&body)
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 429);
    let envelope: Value = response.json().await.expect("JSON");
    assert_eq!(envelope["error"]["code"], 429);
    let message = envelope["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("carol has started the 2 remote builds"),
        "{message}"
    );
    // Operators are not limited, and build where they like.
    let operator = submit(&app, "operator-secret", definition).await;
    assert!(
        operator["libraryRef"]
            .as_str()
            .is_some_and(|r| r.starts_with("library://library/remote-builds/rb-")),
        "{operator}"
    );
}
