//! Untrusted build steps under kiln's default settings: a Dockerfile `RUN` (Wave's
//! `containerFile`) and a definition's `%post` (a remote build) each run the escape probes the
//! public-service review ran: read the data directory, write a file on the host, list host
//! processes, read the host's `/proc/1/cmdline`, connect to the host's loopback, to the host's
//! own address and to 169.254.169.254. Each fails, the build log says what the step saw, and
//! the host checks nothing happened. Then what contained steps still do (`pip install` from
//! PyPI through the site's CA bundle) and what a cancelled build leaves behind (nothing).

use crate::support::{debian_base, forms};

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{PUSHER, TestApp};
use base64::Engine as _;
use debian_base::{DEBIAN_TAG, push_debian_python_base};
use forms::signup_token;
use futures_util::StreamExt as _;
use kiln::build::buildah::{Buildah, Storage};
use kiln::build::containerfile::{ContainerfileBuilder, ContainerfileSettings};
use kiln::build::{Backend, BuildLog};
use kiln::config::BuildSettings;
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient};
use kiln::spec::Platform;
use kiln::store::{BuildOutcome, NewBuild, SqliteStore, Store};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const BASE_REPOSITORY: &str = "kiln/base/debian";

/// The operator token the Wave requests carry.
const TOKEN: &str = "sandbox-test-token";

/// What a probe step is told about the host, and what the host checks afterwards.
struct Probe {
    /// Accepts on 0.0.0.0: reachable as 127.0.0.1 and as the host's own address.
    listener: TcpListener,
    /// A directory only the host has; the step tries to write `escaped` in it.
    host_dir: tempfile::TempDir,
}

impl Probe {
    fn new() -> Probe {
        let listener = TcpListener::bind("0.0.0.0:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        Probe {
            listener,
            host_dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The Python program the step runs: each probe prints one `PROBE` line saying what it
    /// saw or the error that stopped it.
    fn script(&self, data_dir: &Path) -> String {
        let port = self.listener.local_addr().expect("address").port();
        let host_ip = host_address();
        format!(
            r#"import os, socket
def probe(name, action):
    try:
        print("PROBE", name, "SUCCEEDED:", action(), flush=True)
    except Exception as err:
        print("PROBE", name, "FAILED:", repr(err), flush=True)
probe("read data dir", lambda: os.listdir({data:?}))
def escape():
    os.makedirs("/tmp/jail", exist_ok=True)
    os.chroot("/tmp/jail")
    for _ in range(64):
        os.chdir("..")
    os.chroot(".")
    return "chroot escape attempted"
probe("chroot escape", escape)
def write():
    with open({target:?}, "w") as out:
        out.write("escaped")
    return "wrote"
probe("write host file", write)
def processes():
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    seen = []
    for pid in pids:
        try:
            seen.append(open("/proc/%s/cmdline" % pid).read().replace("\0", " "))
        except OSError:
            pass
    return "%d processes: %r" % (len(pids), seen)
probe("list processes", processes)
probe("read /proc/1/cmdline", lambda: open("/proc/1/cmdline").read().replace("\0", " "))
def connect(host, port):
    def attempt():
        socket.create_connection((host, port), timeout=5).close()
        return "connected"
    return attempt
for host in ["127.0.0.1", "10.0.2.2", {host_ip:?}]:
    probe("connect %s:{port}" % host, connect(host, {port}))
probe("connect 169.254.169.254:80", connect("169.254.169.254", 80))
"#,
            data = data_dir.display().to_string(),
            target = self.host_dir.path().join("escaped").display().to_string(),
        )
    }

    /// A shell command running [`Probe::script`] (hex-encoded: no quoting to get wrong).
    fn command(&self, data_dir: &Path) -> String {
        let hex: String = self
            .script(data_dir)
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("python3 -c 'exec(bytes.fromhex(\"{hex}\").decode())'")
    }

    /// Checks the log shows every probe failing, and the host that nothing reached it.
    fn check(&self, log: &str) {
        let line = |name: &str| {
            log.lines()
                .find(|line| line.contains(&format!("PROBE {name} ")))
                .unwrap_or_else(|| panic!("the log has no {name} probe:\n{log}"))
                .to_owned()
        };
        let read = line("read data dir");
        assert!(
            read.contains("FAILED") && read.contains("No such file"),
            "{read}"
        );
        assert!(
            !log.contains("kiln.db"),
            "the data directory was listed:\n{log}"
        );

        assert!(
            !self.host_dir.path().join("escaped").exists(),
            "a step wrote a file on the host:\n{log}"
        );
        let write = line("write host file");
        assert!(
            write.contains("FAILED") && write.contains("No such file"),
            "{write}"
        );

        let processes = line("list processes");
        let count: usize = processes
            .split("SUCCEEDED: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{processes}"));
        assert!(count < 10, "the step sees host processes: {processes}");
        let me = std::env::current_exe().expect("exe");
        let me = me.file_name().expect("name").to_string_lossy();
        assert!(
            !processes.contains(&*me),
            "the step saw this test: {processes}"
        );

        let host_init = std::fs::read_to_string("/proc/1/cmdline")
            .expect("host /proc/1")
            .replace('\0', " ");
        let init = line("read /proc/1/cmdline");
        assert!(
            !init.contains(host_init.trim()),
            "the step read the host's init: {init}"
        );

        let port = self.listener.local_addr().expect("address").port();
        let loopback = line(&format!("connect 127.0.0.1:{port}"));
        assert!(loopback.contains("Connection refused"), "{loopback}");
        for host in ["10.0.2.2".to_owned(), host_address()] {
            let probe = line(&format!("connect {host}:{port}"));
            assert!(probe.contains("No route to host"), "{probe}");
        }
        let metadata = line("connect 169.254.169.254:80");
        assert!(metadata.contains("No route to host"), "{metadata}");
        match self.listener.accept() {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a step reached the host's listener: {other:?}\n{log}"),
        }
    }
}

/// The host's address towards the internet (no packet is sent to find it).
fn host_address() -> String {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
    socket.connect("198.51.100.1:9").expect("route");
    socket.local_addr().expect("address").ip().to_string()
}

/// The tests here run one at a time: they count the host's buildah containers, jails and
/// processes, and buildah lists a container under the first name of its image, which another
/// test's base (the same bytes under another name) may have given it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// kiln under its default build settings, with its data in the returned directory, the
/// Debian base in its registry under `repository`, and an operator token.
async fn start(repository: &str) -> (TestApp, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().to_owned();
    let app = TestApp::start_with(|config| {
        config.data_dir = data_dir;
        config.api.tokens = vec![TOKEN.into()];
    })
    .await;
    let pusher = RegistryClient::new(
        &app.address.to_string(),
        Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1)),
        &[],
    )
    .expect("registry client");
    push_debian_python_base(&pusher, repository).await;
    (app, data)
}

/// kiln as the tests start it, with the Debian base in its registry under `repository`, and
/// a work directory for builders run directly.
async fn start_plain(repository: &str) -> (TestApp, tempfile::TempDir) {
    let app = TestApp::start().await;
    let pusher = RegistryClient::new(
        &app.address.to_string(),
        Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1)),
        &[],
    )
    .expect("registry client");
    push_debian_python_base(&pusher, repository).await;
    (app, tempfile::tempdir().expect("temp dir"))
}

/// Removes the base a builder of the tests' own pulled into buildah's default storage under
/// this app's address (kiln's server keeps its pulls in its data directory).
fn remove_pulled_base(app: &TestApp, repository: &str) {
    let base = format!("{}/{repository}:{DEBIAN_TAG}", app.address);
    let _ = Command::new("buildah").args(["rmi", &base]).output();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dockerfile_run_step_cannot_reach_the_host() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let (app, data) = start(BASE_REPOSITORY).await;
    let data_dir = data.path();
    let probe = Probe::new();
    let dockerfile = format!(
        "FROM {}/{BASE_REPOSITORY}:{DEBIAN_TAG}\nRUN {}\n",
        app.address,
        probe.command(data_dir)
    );
    let body = json!({
        "containerFile": base64::engine::general_purpose::STANDARD.encode(dockerfile),
        "containerPlatform": "linux/amd64",
        "packages": null,
    });
    let response = reqwest::Client::new()
        .post(app.url("/v1alpha2/container"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("JSON");
    let request = answer["requestId"].as_str().expect("requestId");
    let build = answer["buildId"].as_str().expect("buildId");
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        let status: Value = reqwest::get(app.url(&format!("/v1alpha2/container/{request}/status")))
            .await
            .expect("status")
            .json()
            .await
            .expect("JSON");
        if status["status"] == "DONE" {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let log = reqwest::get(app.url(&format!("/v1alpha1/builds/{build}/logs")))
        .await
        .expect("logs")
        .text()
        .await
        .expect("text");
    assert_eq!(status["succeeded"], json!(true), "{status}\n{log}");
    assert!(
        log.contains("build steps run in runc containers"),
        "the log says how steps are contained:\n{log}"
    );
    probe.check(&log);
}

/// Gets a library token from the `/auth/tokens` page, as a user would.
async fn token_for(app: &TestApp, user: &str) -> String {
    signup_token(&app.url("/auth/tokens"), user).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_definitions_post_cannot_reach_the_host() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let repository = "kiln/base/debian-definition";
    let (app, data) = start(repository).await;
    let data_dir = data.path();
    let token = token_for(&app, "mallory").await;
    let probe = Probe::new();
    let definition = format!(
        "Bootstrap: docker\nFrom: {}/{repository}:{DEBIAN_TAG}\n\n%post\n    {}\n",
        app.address,
        probe.command(data_dir)
    );
    let body = json!({
        "definitionRaw": base64::engine::general_purpose::STANDARD.encode(definition),
        "libraryRef": "",
        "libraryURL": app.url(""),
        "builderRequirements": {"arch": "amd64"},
        "workingDir": "/home/mallory",
    });
    let response = reqwest::Client::new()
        .post(app.url("/v1/build"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 200);
    let info: Value = response.json().await.expect("JSON");
    let id = info["data"]["id"].as_str().expect("build id");
    let mut request = format!("ws://{}/v1/build-ws/{id}", app.address)
        .into_client_request()
        .expect("ws request");
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket handshake");
    let mut log = String::new();
    while let Some(message) = socket.next().await {
        match message.expect("websocket message") {
            Message::Text(text) => log.push_str(&text),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(
        log.contains("pushed library://"),
        "the build succeeded:\n{log}"
    );
    assert!(log.contains("build steps run in runc containers"), "{log}");
    probe.check(&log);
}

/// A Dockerfile builder like kiln's, pushing to `app` and working in `work`, with `settings`.
fn builder(app: &TestApp, work: &Path, settings: &BuildSettings) -> ContainerfileBuilder {
    ContainerfileBuilder::new(
        Buildah::new(settings),
        ContainerfileSettings {
            registry: app.address.to_string(),
            credentials: Credentials::new(PUSHER.0, PUSHER.1),
            insecure: false,
            work_dir: work.to_owned(),
        },
    )
    .expect("builder")
}

/// A started Dockerfile build of `dockerfile` in a fresh store, and its log.
async fn started(
    dockerfile: &str,
) -> (
    Arc<dyn Store>,
    kiln::store::BuildRecord,
    BuildLog,
    tempfile::TempDir,
) {
    let data = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&data.path().join("kiln.db"))
            .await
            .expect("store"),
    );
    let record = start_build(store.as_ref(), dockerfile).await;
    let log = BuildLog::new(store.clone(), record.id.clone());
    (store, record, log, data)
}

/// Submits a Dockerfile build of `dockerfile` to `store` and starts it, as a worker would.
async fn start_build(store: &dyn Store, dockerfile: &str) -> kiln::store::BuildRecord {
    let registry = "127.0.0.1:1".parse().expect("a host");
    let new = NewBuild {
        image: "127.0.0.1:1/library/sandbox:test"
            .parse()
            .expect("an image"),
        ..kiln::plan::dockerfile_build(&registry, dockerfile.to_owned(), Platform::LinuxAmd64)
    };
    store.submit(new).await.expect("submit");
    store
        .claim_next(
            "test",
            &kiln::store::WorkerScope::any(),
            Duration::from_secs(3600),
        )
        .await
        .expect("claim")
        .expect("the build waits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pip_install_works_in_a_contained_step() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let repository = "kiln/base/debian-pip";
    let (app, work) = start_plain(repository).await;
    let settings = BuildSettings {
        ca_bundle: Some("/etc/ssl/certs/ca-certificates.crt".into()),
        ..BuildSettings::default()
    };
    let dockerfile = format!(
        "FROM {}/{repository}:{DEBIAN_TAG}\n\
         RUN pip install --break-system-packages --no-cache-dir six==1.16.0 \
         && python3 -c 'import six; print(\"six\", six.__version__)'\n",
        app.address
    );
    let (store, mut record, log, _data) = started(&dockerfile).await;
    record.image = format!("{}/library/sandbox-pip:test", app.address)
        .parse()
        .expect("an image");
    let outcome = builder(&app, work.path(), &settings)
        .run(&record, &log)
        .await;
    let text = store.read_log(&record.id, 0).await.expect("log").text;
    remove_pulled_base(&app, repository);
    assert!(
        matches!(outcome, BuildOutcome::Succeeded { .. }),
        "{outcome:?}\n{text}"
    );
    assert!(text.contains("six 1.16.0"), "{text}");
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .collect()
}

/// `buildah` on `storage` (its default storage when `None`).
fn buildah_on(storage: Option<&Storage>) -> Command {
    let mut command = Command::new("buildah");
    command.args(storage.map(Storage::options).iter().flatten());
    command
}

/// Runs buildah on `storage` with `args`, which must succeed; its stdout.
fn buildah_ok(storage: Option<&Storage>, args: &[&str]) -> String {
    let output = buildah_on(storage)
        .args(args)
        .output()
        .expect("buildah runs");
    assert!(
        output.status.success(),
        "buildah {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// buildah's working containers in `storage`.
fn containers_in(storage: Option<&Storage>) -> Vec<Value> {
    let mut tries = 0;
    let output = loop {
        let output = buildah_on(storage)
            .args(["containers", "--all", "--json"])
            .output()
            .expect("buildah containers");
        tries += 1;
        // A build changing the storage at that moment can make the listing fail.
        if output.status.success() || tries == 20 {
            break output;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        output.status.success(),
        "buildah containers: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let list: Value = serde_json::from_slice(&output.stdout).expect("buildah lists JSON");
    list.as_array().cloned().unwrap_or_default()
}

/// buildah's working containers in `storage` made from `image`.
fn containers_from(storage: Option<&Storage>, image: &str) -> Vec<Value> {
    containers_in(storage)
        .into_iter()
        .filter(|c| c["imagename"].as_str().is_some_and(|name| name == image))
        .collect()
}

/// This process's build jails (freezer cgroups named `<pid>-<n>`) that hold a process whose
/// command line starts with `marker`. Other areas of this test binary run builds in jails of
/// this process at the same time, so a test follows only its own build's jail.
fn own_jails_running(marker: &str) -> Vec<PathBuf> {
    let prefix = format!("{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup/freezer/kiln") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
        .filter(|jail| {
            processes_under(jail).iter().any(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                    String::from_utf8_lossy(&cmdline)
                        .replace('\0', " ")
                        .starts_with(marker)
                })
            })
        })
        .collect()
}

/// The processes in cgroup `dir` and the cgroups under it (buildah's runtime nests its own).
fn processes_under(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(processes_under(&entry.path()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_build_leaves_no_process_and_no_container() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let repository = "kiln/base/debian-cancel";
    let (app, work) = start_plain(repository).await;
    let base = format!("{}/{repository}:{DEBIAN_TAG}", app.address);
    let marker = "sleep 4317";
    let dockerfile = format!("FROM {base}\nRUN {marker}\n");
    let (_store, mut record, log, _data) = started(&dockerfile).await;
    record.image = format!("{}/library/sandbox-cancel:test", app.address)
        .parse()
        .expect("an image");
    let backend = builder(&app, work.path(), &BuildSettings::default());
    let build = tokio::spawn(async move { backend.run(&record, &log).await });

    let deadline = Instant::now() + Duration::from_secs(300);
    while processes_with(marker)
        .iter()
        .all(|cmd| !cmd.starts_with(marker))
    {
        assert!(!build.is_finished(), "the build ended before its step ran");
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        containers_from(None, &base).len(),
        1,
        "the step runs in a working container"
    );
    let jails = own_jails_running(marker);
    assert!(!jails.is_empty(), "the build runs in a jail");

    // Cancelling drops the build's future, as the queue's cancel and time limit do.
    build.abort();
    let _ = build.await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = (
            processes_with(marker),
            containers_from(None, &base),
            jails
                .iter()
                .filter(|jail| jail.exists())
                .collect::<Vec<_>>(),
        );
        if left.0.is_empty() && left.1.is_empty() && left.2.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a cancelled build left processes, containers or jails behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    remove_pulled_base(&app, repository);
}

/// This host's jails of process `pid`: cgroups and records.
fn jails_of(pid: u32) -> Vec<String> {
    let prefix = format!("{pid}-");
    ["/sys/fs/cgroup/freezer/kiln", "/run/kiln-sandbox"]
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.filter_map(Result::ok))
        .map(|entry| entry.path().display().to_string())
        .filter(|path| {
            path.rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with(&prefix))
        })
        .collect()
}

/// `kiln serve` as a process of its own, on `address`, with its data in `data`.
fn kiln_serve(address: &str, data: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("serve")
        .env("KILN_LISTEN", address)
        .env("KILN_REGISTRY", address)
        .env("KILN_DATA_DIR", data)
        .env("KILN_REGISTRY_USERS", format!("{}:{}", PUSHER.0, PUSHER.1))
        .env("KILN_REGISTRY_OPERATORS", PUSHER.0)
        .env("KILN_API_TOKENS", TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kiln serve starts")
}

async fn until_healthy(address: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reqwest::get(format!("http://{address}/health"))
        .await
        .is_ok_and(|response| response.status().is_success())
    {
        assert!(Instant::now() < deadline, "kiln did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_kiln_leaves_no_build_running() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let address = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").to_string()
    };
    let data = tempfile::tempdir().expect("temp dir");
    let storage = kiln_storage(data.path());
    let mut kiln = kiln_serve(&address, data.path());
    until_healthy(&address).await;
    let repository = "kiln/base/debian-crash";
    let pusher = RegistryClient::new(
        &address,
        Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1)),
        &[],
    )
    .expect("registry client");
    push_debian_python_base(&pusher, repository).await;
    let base = format!("{address}/{repository}:{DEBIAN_TAG}");
    let marker = "sleep 4318";
    let body = json!({
        "containerFile": base64::engine::general_purpose::STANDARD
            .encode(format!("FROM {base}\nRUN {marker}\n")),
        "containerPlatform": "linux/amd64",
        "packages": null,
    });
    let response = reqwest::Client::new()
        .post(format!("http://{address}/v1alpha2/container"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(300);
    while processes_with(marker)
        .iter()
        .all(|cmd| !cmd.starts_with(marker))
    {
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!jails_of(kiln.id()).is_empty(), "the build runs in a jail");

    kiln.kill().expect("kill -9");
    kiln.wait().expect("kiln exits");
    // buildah gets SIGTERM as kiln's parent-death signal and stops the step itself; with the
    // other areas' builds running beside this test that took over 30 s once.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = (
            processes_with(marker),
            containers_from(Some(&storage), &base),
        );
        if left.0.is_empty() && left.1.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "killing kiln left its build running: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The next kiln sweeps up the dead one's jails at start.
    let abandoned = kiln.id();
    let mut next = kiln_serve(&address, data.path());
    until_healthy(&address).await;
    let left = jails_of(abandoned);
    let _ = next.kill();
    let _ = next.wait();
    assert!(
        left.is_empty(),
        "the dead kiln's jails were not swept: {left:?}"
    );
}

/// kiln's buildah storage for the data directory `data`.
fn kiln_storage(data: &Path) -> Storage {
    let config = kiln::config::Config {
        data_dir: data.to_owned(),
        ..Default::default()
    };
    Storage::new(&config.buildah_storage_dir())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_kiln_sweeps_what_interrupted_builds_left() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().expect("temp dir");
    let config = kiln::config::Config {
        data_dir: data.path().to_owned(),
        ..Default::default()
    };

    // The store: a build a worker of another kiln runs (started, no lease of this one's), and
    // one that failed.
    let store = SqliteStore::open(&config.database_path())
        .await
        .expect("store");
    let running = start_build(&store, "FROM scratch\nRUN running\n").await.id;
    let finished = start_build(&store, "FROM scratch\nRUN finished\n").await.id;
    let failed = BuildOutcome::Failed {
        reason: "interrupted".into(),
    };
    store.finish(&finished, failed).await.expect("finish");
    drop(store);
    let work = config.work_dir();
    let unknown = "bd-00000000000000ff_1";
    for dir in [running.as_str(), &finished, unknown, "base-4242"] {
        std::fs::create_dir_all(work.join(dir).join("staging")).expect("work dir");
        std::fs::write(work.join(dir).join("staging/file"), "left").expect("file");
    }

    // kiln's storage as a buildah killed mid-build leaves it: the working container, the image
    // it committed under kiln's local tag, an untagged intermediate image; and a pulled base,
    // which is a cache to keep.
    let storage = kiln_storage(data.path());
    let container = format!("kiln-sweep-test-{}", std::process::id());
    buildah_ok(Some(&storage), &["from", "--name", &container, "scratch"]);
    let local = format!("localhost/kiln-containerfile:{finished}");
    let cached = "127.0.0.1:1/kiln/base/debian:bookworm";
    for name in [local.as_str(), cached] {
        buildah_ok(Some(&storage), &["commit", "--quiet", &container, name]);
    }
    let intermediate = buildah_ok(Some(&storage), &["commit", "--quiet", &container]);
    // A step was running: its container's root file system is mounted.
    buildah_ok(Some(&storage), &["mount", &container]);
    // Someone else's container, in buildah's default storage, is not kiln's to remove.
    let foreign = format!("kiln-sweep-foreign-{}", std::process::id());
    buildah_ok(None, &["from", "--name", &foreign, "scratch"]);

    let app = TestApp::start_with(|settings| settings.data_dir = config.data_dir.clone()).await;
    // kiln serves once the sweep is done.
    let health = reqwest::get(app.url("/health")).await.expect("health");
    assert!(health.status().is_success(), "{}", health.status());
    let foreign_left = containers_in(None)
        .iter()
        .any(|c| c["containername"] == foreign.as_str());
    let _ = buildah_on(None).args(["rm", &foreign]).output();
    drop(app);

    assert_eq!(containers_in(Some(&storage)), Vec::<Value>::new());
    let images: Value =
        serde_json::from_str(&buildah_ok(Some(&storage), &["images", "--all", "--json"]))
            .expect("JSON");
    let images = images.as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = images
        .iter()
        .flat_map(|image| image["names"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(names, [cached], "kiln's local tag went, the cache stayed");
    assert!(
        !images.iter().any(|image| intermediate
            .trim()
            .starts_with(image["id"].as_str().unwrap_or("-"))),
        "the untagged image went: {images:?}"
    );
    assert!(
        foreign_left,
        "the sweep removed a container not in kiln's storage"
    );

    assert!(
        work.join(&running).join("staging/file").is_file(),
        "a running build keeps its work directory"
    );
    assert!(
        !work.join(&finished).exists(),
        "a finished build's work directory went"
    );
    assert!(
        !work.join(unknown).exists(),
        "an unknown build's work directory went"
    );
    assert!(
        work.join("base-4242/staging/file").is_file(),
        "what is not a build's directory stays"
    );
}
