//! Bounds a public kiln keeps: a build printing without end costs bounded memory and a capped
//! log, a build past its time limit is stopped, builds can be cancelled by their submitter and
//! operators only, the queue refuses what it cannot hold, repeated requests add no rows, and a
//! build interrupted by `kill -9` is built again from scratch to the same image.

use crate::support::{conda_channel, debian_base};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{PUSHER, TestApp};
use base64::Engine as _;
use conda_channel::{CHANNEL_NAME, CondaChannel};
use futures_util::StreamExt as _;
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient};
use serde_json::{Value, json};

const BASE: &str = "kiln/base/debian";
const OPERATOR: &str = "operator-token";

fn pusher(address: &str) -> RegistryClient {
    let auth = Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1));
    RegistryClient::new(address, auth, &[]).expect("client")
}

/// kiln in-process with an operator token, its Debian base in its registry, and `configure`'s
/// changes.
async fn start(configure: impl FnOnce(&mut kiln::config::Config)) -> TestApp {
    let app = TestApp::start_with(|config| {
        config.api.tokens = vec![OPERATOR.into()];
        configure(config);
    })
    .await;
    debian_base::push_debian_python_base(&pusher(&app.address.to_string()), BASE).await;
    app
}

/// Submits `dockerfile` as a Wave `containerFile` with the operator's token to kiln at `base`;
/// the build id.
async fn submit_dockerfile(base: &str, dockerfile: &str) -> String {
    let body = json!({
        "containerFile": base64::engine::general_purpose::STANDARD.encode(dockerfile),
        "containerPlatform": "linux/amd64",
        "towerAccessToken": OPERATOR,
    });
    let response = reqwest::Client::new()
        .post(format!("{base}/v1alpha2/container"))
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = response.status();
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(status, 200, "{answer}");
    answer["buildId"].as_str().expect("buildId").to_owned()
}

/// Polls `GET /api/v1/builds/{id}` at `base` until the build is done; the record.
async fn until_done(base: &str, id: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(response) = reqwest::get(format!("{base}/api/v1/builds/{id}")).await
            && response.status() == 200
        {
            let build: Value = response.json().await.expect("JSON");
            if build["status"] == "DONE" {
                return build;
            }
        }
        assert!(
            Instant::now() < deadline,
            "build {id} not done in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The peak resident memory of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number");
    kib * 1024
}

/// Reads a whole log response as a stream, keeping only its length and last 200 bytes.
async fn read_streamed(url: String) -> (usize, String) {
    let response = reqwest::get(url).await.expect("GET");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let (mut length, mut tail) = (0, Vec::new());
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("body");
        length += chunk.len();
        tail.extend_from_slice(&chunk);
        if tail.len() > 200 {
            tail.drain(..tail.len() - 200);
        }
    }
    (length, String::from_utf8_lossy(&tail).into_owned())
}

/// kiln runs as a child process here: its peak memory is its own, not that of the other tests
/// this binary runs at the same time.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_flood_stays_bounded_in_memory_and_in_the_store() {
    let data = tempfile::tempdir().expect("temp dir");
    let kiln = Kiln::start(data.path(), free_port(), "");
    kiln.ready().await;
    let host = format!("127.0.0.1:{}", kiln.port);
    debian_base::push_debian_python_base(&pusher(&host), BASE).await;
    let dockerfile = format!(
        "FROM {host}/{BASE}:bookworm\n\
         RUN head -c 268435456 /dev/zero | tr '\\0' x; echo; seq 1 3000000\n"
    );
    let id = submit_dockerfile(&kiln.url(), &dockerfile).await;
    let build = until_done(&kiln.url(), &id, Duration::from_secs(600)).await;
    assert_eq!(build["succeeded"], json!(true), "{build}");

    let log_url = format!("{}/v1alpha1/builds/{id}/logs", kiln.url());
    let log = reqwest::get(&log_url)
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    // The 256 MiB line is its first 16 KiB and a marker counting the rest.
    let long = log
        .lines()
        .find(|line| line.starts_with("xxxx"))
        .expect("the long line");
    assert_eq!(
        long,
        format!(
            "{} [… {} bytes cut]",
            "x".repeat(16 << 10),
            (256 << 20) - (16 << 10)
        )
    );
    // The log keeps 8 MiB (and the few lines about how the build ended).
    assert!(log.len() <= (8 << 20) + 1024, "{} bytes", log.len());
    assert!(log.contains("\n1\n2\n3\n"), "the numbers start");
    assert!(!log.contains("\n3000000\n"), "the numbers are cut");
    let last = log.lines().last().expect("a last line");
    let dropped: u64 = last
        .strip_prefix("log truncated, ")
        .and_then(|rest| rest.strip_suffix(" bytes dropped"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the log ends with the truncation line: {last:?}"));
    // seq 1 3000000 prints 22,888,896 bytes; what the log kept of it is not dropped.
    let kept_numbers: u64 = log
        .lines()
        .filter(|line| line.bytes().all(|b| b.is_ascii_digit()) && !line.is_empty())
        .map(|line| line.len() as u64 + 1)
        .sum();
    assert!(
        dropped + kept_numbers >= 22_888_896 && dropped + kept_numbers < 22_888_896 + 4096,
        "dropped {dropped} + kept {kept_numbers}"
    );

    // Four concurrent reads of the whole log, and the build page, stream it page by page.
    let reads: Vec<_> = (0..4)
        .map(|_| tokio::spawn(read_streamed(log_url.clone())))
        .collect();
    for read in reads {
        let (length, tail) = read.await.expect("read");
        assert_eq!(length, log.len());
        assert!(tail.ends_with(&format!("{last}\n")), "{tail}");
    }
    let page = reqwest::get(format!("{}/view/builds/{id}", kiln.url()))
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(page.contains("the whole log"), "the page links the log");
    assert!(page.len() < 1 << 20, "the page shows one page of the log");

    let peak = peak_rss(kiln.child.id());
    println!("peak RSS of kiln: {} MB", peak >> 20);
    assert!(peak < 300 << 20, "peak RSS {} MB", peak >> 20);
}

/// Processes whose command line contains `needle`, with their pids.
fn processes_running(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_past_its_time_limit_is_stopped_with_its_processes() {
    let app = start(|config| config.build.timeouts.containerfile = Some(5)).await;
    // A duration no other test sleeps, to find this build's process by.
    let dockerfile = format!("FROM {}/{BASE}:bookworm\nRUN sleep 617\n", app.address);
    let started = Instant::now();
    let id = submit_dockerfile(&app.url(""), &dockerfile).await;
    let build = until_done(&app.url(""), &id, Duration::from_secs(120)).await;
    assert_eq!(build["succeeded"], json!(false), "{build}");
    assert_eq!(build["reason"], json!("timed out after 5 s"));
    assert!(started.elapsed() < Duration::from_secs(60));
    let log = reqwest::get(app.url(&format!("/v1alpha1/builds/{id}/logs")))
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(log.contains("build failed: timed out after 5 s"), "{log}");
    // Nothing the build started outlives it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_running("sleep 617");
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still running: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `POST /api/v1/images` for `packages` with `token`; the status and answer.
async fn request_image(app: &TestApp, packages: &[&str], token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(app.url("/api/v1/images"))
        .json(&json!({"packages": packages, "channels": [CHANNEL_NAME]}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").cloned();
    let mut answer: Value = response.json().await.expect("JSON");
    if let Some(retry_after) = retry_after {
        answer["retry-after"] = json!(retry_after.to_str().expect("ASCII"));
    }
    (status, answer)
}

async fn cancel(app: &TestApp, id: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(app.url(&format!("/api/v1/builds/{id}/cancel")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// Waits until `app` answers, its database migrated.
async fn serving(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reqwest::get(app.url("/health"))
        .await
        .is_ok_and(|response| response.status() == 200)
    {
        assert!(Instant::now() < deadline, "kiln did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A library user's token, made the way `kiln token create` makes it (on the database of a
/// kiln that is [`serving`]).
async fn user_token(data: &Path, user: &str) -> String {
    let store = kiln::store::SqliteStore::open(&data.join("kiln.db"))
        .await
        .expect("store");
    kiln::api::accounts::create_token(&store, user)
        .await
        .expect("token")
}

#[tokio::test(flavor = "multi_thread")]
async fn builds_are_cancelled_by_their_submitter_or_an_operator_only() {
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().to_owned();
    // No workers: builds wait, so there is always something to cancel.
    let app = TestApp::start_with(move |config| {
        config.api.tokens = vec![OPERATOR.into()];
        config.build.workers = 0;
        config.data_dir = data_dir;
    })
    .await;
    serving(&app).await;
    let alice = user_token(data.path(), "alice").await;
    let bob = user_token(data.path(), "bob").await;

    let (status, answer) = request_image(&app, &["kiln-hello=1.0"], Some(&alice)).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["build"]["id"].as_str().expect("build id").to_owned();

    let (status, answer) = cancel(&app, &id, None).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("needs a token")
    );
    let (status, _) = cancel(&app, &id, Some("kiln_made-up")).await;
    assert_eq!(status, 401);
    let (status, answer) = cancel(&app, &id, Some(&bob)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("only its submitter or an operator may cancel it"),
        "{answer}"
    );
    let (status, answer) = cancel(&app, "bd-0000000000000000_1", Some(&alice)).await;
    assert_eq!(status, 404, "{answer}");

    let (status, answer) = cancel(&app, &id, Some(&alice)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "DONE");
    assert_eq!(answer["succeeded"], json!(false));
    assert_eq!(answer["reason"], "cancelled by its submitter");
    let (status, answer) = cancel(&app, &id, Some(&alice)).await;
    assert_eq!(status, 409, "{answer}");

    // An operator cancels anyone's build, an anonymous one (as Wave's are) too.
    let (status, answer) = request_image(&app, &["kiln-hello=2.0"], None).await;
    assert_eq!(status, 200, "{answer}");
    let anonymous = answer["build"]["id"].as_str().expect("build id").to_owned();
    let (status, _) = cancel(&app, &anonymous, Some(&alice)).await;
    assert_eq!(status, 403, "nobody owns an anonymous build");
    let (status, answer) = cancel(&app, &anonymous, Some(OPERATOR)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reason"], "cancelled by an operator");
    let log = reqwest::get(app.url(&format!("/v1alpha1/builds/{anonymous}/logs")))
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(
        log.contains("build cancelled: cancelled by an operator"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_503_with_retry_after() {
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().to_owned();
    let app = TestApp::start_with(move |config| {
        config.api.tokens = vec![OPERATOR.into()];
        config.build.workers = 0;
        config.build.max_queued = 3;
        config.build.max_queued_per_address = 2;
        config.data_dir = data_dir;
    })
    .await;
    serving(&app).await;
    let alice = user_token(data.path(), "alice").await;
    for version in ["1.0", "2.0"] {
        let (status, answer) = request_image(&app, &[&format!("kiln-hello={version}")], None).await;
        assert_eq!(status, 200, "{answer}");
    }
    // A third waiting build from this address, without a token, is one too many.
    let (status, answer) = request_image(&app, &["kiln-libgreet"], None).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["retry-after"], "60");
    let message = answer["message"].as_str().expect("message");
    assert!(
        message.contains("this address has 2 builds waiting"),
        "{message}"
    );
    // Joining a waiting build costs nothing.
    let (status, answer) = request_image(&app, &["kiln-hello=1.0"], None).await;
    assert_eq!(status, 200, "{answer}");
    // With a token the address cap does not apply, the overall one does.
    let (status, answer) = request_image(&app, &["kiln-libgreet"], Some(&alice)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = request_image(&app, &["kiln-pyhello"], Some(OPERATOR)).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("kiln has 3 builds waiting"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_request_from_the_same_client_is_recorded_once() {
    let app = TestApp::start_with(|config| config.build.workers = 0).await;
    let body = json!({"containerImage": "docker.io/library/ubuntu:24.04"});
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let answer: Value = reqwest::Client::new()
            .post(app.url("/v1alpha2/container"))
            .json(&body)
            .send()
            .await
            .expect("POST")
            .json()
            .await
            .expect("JSON");
        ids.insert(answer["requestId"].as_str().expect("requestId").to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids.first().unwrap();
    let status = reqwest::get(app.url(&format!("/v1alpha2/container/{id}/status")))
        .await
        .expect("GET");
    assert_eq!(status.status(), 200);
}

#[tokio::test]
async fn the_pruning_pass_removes_old_requests_and_logs() {
    use kiln::store::{BuildOutcome, ContainerRequest, NewBuild, SqliteStore, Store};
    let data = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&data.path().join("kiln.db"))
        .await
        .expect("store");
    let now = chrono::Utc::now();
    let build = store
        .submit(NewBuild {
            image: "kiln.example/library/x:1".parse().expect("an image"),
            ..kiln::plan::dockerfile_build(
                &"kiln.example".parse().expect("a host"),
                String::new(),
                kiln::spec::Platform::LinuxAmd64,
            )
        })
        .await
        .expect("submit")
        .build;
    store
        .append_log(&build.id, "old news\n")
        .await
        .expect("log");
    store
        .finish(&build.id, BuildOutcome::Failed { reason: "x".into() })
        .await
        .expect("finish");
    for (id, age) in [("000000000001", 40), ("000000000002", 5)] {
        store
            .add_request(&ContainerRequest {
                id: id.into(),
                build_id: None,
                target_image: "x".into(),
                container_image: "x".into(),
                format: "docker".into(),
                cached: true,
                freeze: false,
                created_at: now - chrono::TimeDelta::days(age),
            })
            .await
            .expect("request");
    }
    let retention = kiln::config::Retention::default();
    let pruned = kiln::server::prune(&store, retention, now)
        .await
        .expect("prune");
    assert_eq!((pruned.requests, pruned.logs), (1, 0));
    assert!(store.request("000000000001").await.unwrap().is_none());
    assert!(store.request("000000000002").await.unwrap().is_some());
    // 91 days on, the build's log goes too; its record stays.
    let later = now + chrono::TimeDelta::days(91);
    let pruned = kiln::server::prune(&store, retention, later)
        .await
        .expect("prune");
    assert_eq!((pruned.requests, pruned.logs), (1, 1));
    assert_eq!(store.read_log(&build.id, 0).await.unwrap().text, "");
    assert!(store.build(&build.id).await.unwrap().is_some());
}

/// `kiln serve` as a child process, on a port and data directory that outlive it, with the
/// operator token. Requests are answered at once (`wait_for_build_ms = 0`): the tests act
/// while builds run.
struct Kiln {
    child: Child,
    port: u16,
}

impl Kiln {
    /// kiln with its defaults and `settings`, TOML tables other than `[api]`.
    fn start(data: &Path, port: u16, settings: &str) -> Kiln {
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "listen = \"{host}\"\nregistry = \"{host}\"\ndata_dir = \"{}\"\n\
             [[embedded_registry.users]]\nuser = \"{}\"\npassword = \"{}\"\noperator = true\n\
             [api]\nwait_for_build_ms = 0\ntokens = [\"{OPERATOR}\"]\n{settings}",
            data.display(),
            PUSHER.0,
            PUSHER.1
        );
        let config_path = data.join("kiln.toml");
        std::fs::write(&config_path, config).expect("config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("kiln.log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("serve")
            .env("KILN_CONFIG", &config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kiln serve starts");
        Kiln { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::get(format!("{}/health", self.url()))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "kiln did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill_hard(&mut self) {
        // SIGKILL, as a crash or the OOM killer would end it.
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Kiln {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// Asks `kiln` for `packages` for linux/amd64; the build id.
async fn ask(kiln: &Kiln, packages: &[&str]) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/images", kiln.url()))
        .json(&json!({
            "packages": packages,
            "channels": [CHANNEL_NAME],
            "platforms": ["linux/amd64"],
        }))
        .send()
        .await
        .expect("POST");
    let answer: Value = response.json().await.expect("JSON");
    answer["build"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a build: {answer}"))
        .to_owned()
}

/// Whether anything under `dir` is named `name`, or ends with it when it starts with `*`.
fn contains_path(dir: &Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let matches = match name.strip_prefix('*') {
            Some(suffix) => file_name.ends_with(suffix),
            None => file_name == name,
        };
        if matches {
            return true;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) && contains_path(&entry.path(), name) {
            return true;
        }
    }
    false
}

/// A clean build of `packages`, then the same build in a fresh kiln killed with SIGKILL once
/// `marker` shows up in its work directory (packages are being installed), restarted, and
/// left to retry: the retried image is the clean one, digest for digest.
async fn crash_and_retry(packages: &[&str], marker: &str) {
    let channel = CondaChannel::build();
    let server = channel.serve();
    let port = free_port();
    let base = format!("127.0.0.1:{port}/{BASE}:bookworm");
    let settings = format!(
        "[channel_mirrors]\n\"{CHANNEL_NAME}\" = \"{}\"\n\
         [base.conda]\nimage = \"{base}\"\nglibc = \"2.36\"\n\
         [base.python]\nimage = \"{base}\"\nglibc = \"2.36\"\n\
         [build]\nworkers = 1\nlease_secs = 2\n",
        server.url
    );

    let clean_data = tempfile::tempdir().expect("temp dir");
    let clean_digest = {
        let kiln = Kiln::start(clean_data.path(), port, &settings);
        kiln.ready().await;
        debian_base::push_debian_python_base(&pusher(&format!("127.0.0.1:{port}")), BASE).await;
        let id = ask(&kiln, packages).await;
        let build = until_done(&kiln.url(), &id, Duration::from_secs(600)).await;
        assert_eq!(build["succeeded"], json!(true), "{build}");
        build["digest"].as_str().expect("digest").to_owned()
    };

    let data = tempfile::tempdir().expect("temp dir");
    let mut kiln = Kiln::start(data.path(), port, &settings);
    kiln.ready().await;
    debian_base::push_debian_python_base(&pusher(&format!("127.0.0.1:{port}")), BASE).await;
    let id = ask(&kiln, packages).await;
    let work: PathBuf = data.path().join("work").join(&id);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !contains_path(&work, marker) {
        assert!(
            Instant::now() < deadline,
            "no {marker} in {}",
            work.display()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    kiln.kill_hard();
    assert!(
        contains_path(&work, marker),
        "the killed build left its staging behind"
    );

    let kiln = Kiln::start(data.path(), port, &settings);
    kiln.ready().await;
    let build = until_done(&kiln.url(), &id, Duration::from_secs(600)).await;
    let log = reqwest::get(format!("{}/v1alpha1/builds/{id}/logs", kiln.url()))
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert_eq!(build["succeeded"], json!(true), "{build}\n{log}");
    assert!(
        log.contains("started again (attempt 2 of 3)"),
        "the build was interrupted and retried: {log}"
    );
    assert_eq!(
        build["digest"].as_str(),
        Some(clean_digest.as_str()),
        "the retried image is the clean build's:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pip_build_killed_while_installing_is_retried_from_scratch() {
    crash_and_retry(
        &["pip:requests==2.32.3", "pip:black==24.10.0"],
        "*.dist-info",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conda_build_killed_while_installing_is_retried_from_scratch() {
    crash_and_retry(
        &["kiln-hello=2.0", "kiln-pyhello", "pip:idna==3.10"],
        "conda-meta",
    )
    .await;
}
