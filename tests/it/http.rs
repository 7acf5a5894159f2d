//! kiln as a public HTTP service: connections that never finish a request do not shut others
//! out, bodies over the limit get kiln's JSON 413, `/health` tells a database that cannot write
//! and a full disk apart from a healthy kiln, internal errors show only a request id, failure
//! reasons show no server paths, pages send security headers and their forms need a CSRF
//! token, and the data directory and database are private.
//!
//! Half-open connections and the full disk are tested against `kiln serve` as a child process:
//! under `ulimit -n 256` as in the original finding, and with its data directory on a small
//! tmpfs mounted in a mount namespace of its own (`unshare -m`, as root).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::TestApp;
use crate::support::snapshot::Answers;
use kiln::store::{BuildOutcome, NewBuild, SqliteStore, Store};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// `kiln serve` as a child process, killed when dropped (also when a test panics).
struct Served {
    child: Child,
    port: u16,
}

impl Served {
    /// Starts `kiln serve` through `sh -c script` (the script ends in `exec "$KILN" serve`) with
    /// the data directory `data` and extra environment `env`, and waits for `/health`.
    async fn start(script: &str, data: &Path, env: &[(&str, &str)]) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("sh")
            .args(["-c", script])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KILN", env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_LISTEN", format!("127.0.0.1:{port}"))
            .env("KILN_DATA_DIR", data)
            .env("KILN_BUILD_WORKERS", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh starts");
        let served = Served { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::get(served.url("/health")).await.is_err() {
            assert!(Instant::now() < deadline, "kiln serve did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        served
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /health` within `within`: its status and JSON.
async fn health(url: &str, within: Duration) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .timeout(within)
        .build()
        .expect("client");
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|err| panic!("/health did not answer within {within:?}: {err}"));
    let status = response.status().as_u16();
    (status, response.json().await.expect("/health answers JSON"))
}

/// A connection from `from` that sends half a request's headers and never the rest.
async fn half_open(from: [u8; 4], port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind((from, 0).into())
        .expect("bind a loopback address");
    let mut stream = socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: kiln\r\nX-Slow: ")
        .await
        .expect("send half the headers");
    stream
}

/// What `stream` receives until kiln closes it, and when it closed; `None` if it stays open
/// past `deadline`.
async fn until_closed(mut stream: TcpStream, deadline: Instant) -> Option<(Vec<u8>, Instant)> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some((received, Instant::now())),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// The finding: 280 half-open connections under `ulimit -n 256` made `/health` time out. Now
/// 300 of them, from one client address, hold at most half of the connections kiln serves;
/// `/health` from another address keeps answering at once, and every half-open connection is
/// closed once the header timeout has passed.
#[tokio::test]
async fn half_open_connections_do_not_shut_others_out() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(4);
    let data = tempfile::tempdir().expect("temp dir");
    let kiln = Served::start(
        r#"ulimit -n 256 && exec "$KILN" serve"#,
        data.path(),
        &[("KILN_HTTP_HEADER_TIMEOUT_SECS", "4")],
    )
    .await;
    let opened = Instant::now();
    let mut connections = Vec::new();
    for _ in 0..300 {
        connections.push(half_open([127, 0, 0, 2], kiln.port).await);
    }
    while opened.elapsed() < HEADER_TIMEOUT - Duration::from_secs(1) {
        let (status, body) = health(&kiln.url("/health"), Duration::from_secs(2)).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = opened + HEADER_TIMEOUT + Duration::from_secs(5);
    let ends = futures_util::future::join_all(
        connections
            .into_iter()
            .map(|stream| until_closed(stream, deadline)),
    )
    .await;
    let (mut held, mut refused) = (0, 0);
    for end in ends {
        let (received, closed) = end.expect("every half-open connection is closed");
        let text = String::from_utf8_lossy(&received);
        if text.starts_with("HTTP/1.1 503") {
            assert!(text.contains("too many open connections"), "{text}");
            refused += 1;
        } else {
            assert!(
                closed.duration_since(opened) >= HEADER_TIMEOUT - Duration::from_millis(500),
                "a held connection is closed by the header timeout, not before: {text:?}"
            );
            held += 1;
        }
    }
    // Under `ulimit -n 256` kiln serves 192 connections; one address may fill half of them,
    // beyond its share of 64, and no more.
    assert!((64..=96).contains(&held), "one address holds {held}");
    assert_eq!(held + refused, 300);
    let (status, _) = health(&kiln.url("/health"), Duration::from_secs(2)).await;
    assert_eq!(status, 200);
}

/// A kept-alive connection that goes quiet is closed after the header timeout too.
#[tokio::test]
async fn idle_kept_alive_connections_are_closed() {
    let app = TestApp::start_with(|config| config.http.header_timeout_secs = 2).await;
    let mut stream = TcpStream::connect(app.address).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: kiln\r\n\r\n")
        .await
        .expect("send a request");
    let started = Instant::now();
    let (received, closed) = until_closed(stream, started + Duration::from_secs(10))
        .await
        .expect("the idle connection is closed");
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));
    assert!(closed.duration_since(started) >= Duration::from_millis(1500));
}

#[tokio::test]
async fn over_large_bodies_get_413_in_kilns_shape() {
    let app = TestApp::start_with(|config| config.http.max_body_bytes = 1024).await;
    let http = reqwest::Client::new();
    let entries: Vec<String> = (0..200).map(|i| format!("package{i}=1.0")).collect();
    let mut answers = Answers::new();
    for path in ["/api/v1/images", "/v1alpha2/container"] {
        let response = http
            .post(app.url(path))
            .json(&serde_json::json!({"packages": entries, "condaFile": "x".repeat(2000)}))
            .send()
            .await
            .expect("request");
        let status = response.status();
        assert_eq!(status, 413, "{path}");
        let body: Value = response.json().await.expect("JSON");
        answers.json(path, status, &body, &[]);
    }
    insta::assert_snapshot!(answers.render());
    // The registry has limits of its own: a blob larger than kiln's API limit goes in.
    let blob = vec![7u8; 4096];
    let digest = format!(
        "sha256:{}",
        hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(&blob)[..])
    );
    let pushed = http
        .post(app.url(&format!("/v2/library/big/blobs/uploads/?digest={digest}")))
        .basic_auth(crate::support::PUSHER.0, Some(crate::support::PUSHER.1))
        .body(blob)
        .send()
        .await
        .expect("push");
    assert_eq!(pushed.status(), 201);
}

/// Marks files immutable (`chattr +i`), which refuses writes even to root and through file
/// descriptors already open, and clears the mark when dropped.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: &[PathBuf]) -> Immutable {
        for path in paths {
            let status = Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .expect("chattr runs");
            assert!(status.success(), "chattr +i {}", path.display());
        }
        Immutable(paths.to_vec())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(path).status();
        }
    }
}

/// `/health` on a database that cannot write: 503 with the reason, and 200 again once it can.
/// A request that writes gets a 500 naming only its request id, which is also its header.
#[tokio::test]
async fn health_reports_a_database_that_cannot_write() {
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().to_owned();
    let app = TestApp::start_with(move |config| config.data_dir = dir).await;
    let (status, body) = health(&app.url("/health"), Duration::from_secs(5)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ok")),
        "{body}"
    );

    let database = data.path().join("kiln.db");
    let read_only = Immutable::set(&[database.clone(), data.path().join("kiln.db-wal")]);
    let (status, body) = health(&app.url("/health"), Duration::from_secs(20)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    let reason = body["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with("the database cannot take a write: "),
        "{reason}"
    );

    let response = reqwest::Client::new()
        .post(app.url("/v1alpha2/container"))
        .json(&serde_json::json!({"packages": {"type": "CONDA", "entries": ["samtools=1.21"]}}))
        .send()
        .await
        .expect("request");
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(
        body["message"],
        format!("internal error; request id {id}"),
        "the cause stays in kiln's log"
    );

    drop(read_only);
    // Each failed check closes its connection, so kiln recovers within a few checks.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = health(&app.url("/health"), Duration::from_secs(20)).await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/health still fails once the database is writable: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Another process holding the database's write lock: `/health` says so within seconds.
#[tokio::test]
async fn health_reports_a_locked_database() {
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().to_owned();
    let app = TestApp::start_with(move |config| config.data_dir = dir).await;
    let (status, body) = health(&app.url("/health"), Duration::from_secs(20)).await;
    assert_eq!(status, 200, "kiln has migrated its database: {body}");
    let mut holder = Command::new("sqlite3")
        .arg(data.path().join("kiln.db"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sqlite3 starts");
    let mut stdin = holder.stdin.take().expect("stdin");
    std::io::Write::write_all(
        &mut stdin,
        b"PRAGMA busy_timeout=5000;\nBEGIN IMMEDIATE;\nSELECT 1;\n",
    )
    .expect("take the lock");
    // sqlite3 holds the lock while its input stays open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = health(&app.url("/health"), Duration::from_secs(20)).await;
    assert_eq!(status, 503, "{body}");
    let reason = body["reason"].as_str().expect("a reason");
    assert!(reason.contains("locked"), "{reason}");
    drop(stdin);
    let _ = holder.wait();
    let (status, body) = health(&app.url("/health"), Duration::from_secs(20)).await;
    assert_eq!(status, 200, "{body}");
}

/// A full data disk (a 64 MiB tmpfs, filled): `/health` says so, and a request that writes to
/// the store is told "no space left on the data disk" with 507, not a constraint error or an
/// empty 500.
#[tokio::test]
async fn a_full_disk_is_reported_as_such() {
    let mount = tempfile::tempdir().expect("temp dir");
    let kiln = Served::start(
        r#"exec unshare --mount --propagation private sh -c 'mount -t tmpfs -o size=64m kiln-test "$KILN_DATA_DIR" && exec "$KILN" serve'"#,
        mount.path(),
        &[("KILN_HEALTH_MIN_FREE_MB", "1")],
    )
    .await;
    let (status, body) = health(&kiln.url("/health"), Duration::from_secs(5)).await;
    assert_eq!(status, 200, "{body}");

    // The tmpfs exists only in kiln's mount namespace: reach it through kiln's root.
    let inside = PathBuf::from(format!("/proc/{}/root", kiln.child.id()))
        .join(mount.path().strip_prefix("/").expect("absolute"));
    fill(&inside.join("filler"));
    let (status, body) = health(&kiln.url("/health"), Duration::from_secs(5)).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|reason| reason.starts_with("no space left on the data disk")),
        "{body}"
    );

    let response = reqwest::Client::new()
        .post(kiln.url("/v1alpha2/container"))
        .json(&serde_json::json!({"packages": {"type": "CONDA", "entries": ["samtools=1.21"]}}))
        .send()
        .await
        .expect("request");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(status, 507, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("no space left on the data disk")),
        "{body}"
    );
}

/// Writes to `path` until the disk is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 1 << 20];
    loop {
        if let Err(err) = std::io::Write::write_all(&mut file, &chunk) {
            assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "{err}");
            break;
        }
    }
    let _ = file.sync_all();
}

/// A failure reason quoting files in the data directory or a temporary directory is served
/// without those paths, by kiln's API, Wave's API and the build page.
#[tokio::test]
async fn failure_reasons_show_no_server_paths() {
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().to_owned();
    let app = TestApp::start_with(move |config| {
        config.data_dir = dir;
        config.build.workers = 0;
    })
    .await;
    let (status, _) = health(&app.url("/health"), Duration::from_secs(20)).await;
    assert_eq!(status, 200, "kiln has migrated its database");
    let store = SqliteStore::open(&data.path().join("kiln.db"))
        .await
        .expect("the store opens beside kiln");
    let submitted = store
        .submit(NewBuild {
            image: "localhost/library/x:1".parse().expect("an image"),
            ..kiln::plan::dockerfile_build(
                &"localhost".parse().expect("a host"),
                "FROM scratch".into(),
                kiln::spec::Platform::LinuxAmd64,
            )
        })
        .await
        .expect("submit");
    let id = submitted.build.id;
    let work = data.path().join("work").join(&id).join("context/x.txt");
    let temp = std::env::temp_dir().join("buildah-123/run");
    let reason = format!(
        "COPY failed: open {}: no such file or directory (in {})",
        work.display(),
        temp.display()
    );
    store
        .finish(&id, BuildOutcome::Failed { reason })
        .await
        .expect("finish");

    let data_dir = data.path().to_string_lossy().into_owned();
    for path in [
        format!("/api/v1/builds/{id}"),
        format!("/v1alpha1/builds/{id}"),
        format!("/view/builds/{id}"),
    ] {
        let text = reqwest::get(app.url(&path))
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert!(text.contains("COPY failed: open "), "{path}: {text}");
        assert!(
            !text.contains(&data_dir) && !text.contains("buildah-123"),
            "{path} shows a server path: {text}"
        );
        assert!(
            text.contains("server path"),
            "{path} marks where a path was: {text}"
        );
    }
}

/// Every answer carries an `X-Request-Id`; pages carry a Content-Security-Policy without
/// inline script, no framing, `nosniff` and a Referrer-Policy.
#[tokio::test]
async fn answers_carry_request_ids_and_pages_their_security_headers() {
    let app = TestApp::start().await;
    let mut ids = Vec::new();
    for path in ["/health", "/v2/", "/nope", "/", "/auth/tokens"] {
        let response = reqwest::get(app.url(path)).await.expect("request");
        let id = response.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert_eq!(id.len(), 16, "{path}: {id}");
        ids.push(id);
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let html = response
            .headers()
            .get("content-type")
            .is_some_and(|value| value.to_str().unwrap_or("").starts_with("text/html"));
        if !html {
            continue;
        }
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .expect("ascii")
            .to_owned();
        for directive in [
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(response.headers().contains_key("referrer-policy"), "{path}");
        let body = response.text().await.expect("body");
        assert!(!body.contains("<style"), "{path} has an inline style");
        assert_eq!(
            body.matches("<script").count(),
            body.matches("<script src=").count(),
            "{path} has an inline script"
        );
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "every request has its own id");
}

/// The value of `name="form_token"` in a page.
fn form_token(html: &str) -> String {
    let start = html
        .find(r#"name="form_token" value=""#)
        .expect("the form has a token")
        + r#"name="form_token" value=""#.len();
    html[start..].split('"').next().expect("a value").to_owned()
}

/// The forms that change state (`/auth/tokens`, `/ui/container`) refuse posts without the
/// page's token or with a wrong one, with a 403 page saying why; with it they work. The JSON
/// API is not affected.
#[tokio::test]
async fn forms_need_their_pages_csrf_token() {
    let app = TestApp::start().await;
    let page = reqwest::get(app.url("/auth/tokens")).await.expect("page");
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().expect("name=value").to_owned();
    let token = form_token(&page.text().await.expect("html"));
    let mut answers = Answers::new();
    answers.redact(app.address.to_string(), "kiln");
    answers.redact(env!("CARGO_PKG_VERSION"), "version");
    answers.redact(&token, "form token");
    let http = reqwest::Client::new();
    let post = |path: &str, cookie: Option<&str>, body: String| {
        let mut request = http
            .post(app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };

    let other = "kiln_form=".to_owned() + &"0".repeat(64);
    for (cookie, body, why) in [
        (
            None,
            format!("user=alice&form_token={token}"),
            "came without",
        ),
        (
            Some(cookie.as_str()),
            "user=alice".to_owned(),
            "no form_token field",
        ),
        (
            Some(cookie.as_str()),
            "user=alice&form_token=00ff".to_owned(),
            "does not match",
        ),
        (
            Some(other.as_str()),
            format!("user=alice&form_token={token}"),
            "does not match",
        ),
    ] {
        let response = post("/auth/tokens", cookie, body.clone())
            .await
            .expect("post");
        let status = response.status();
        assert_eq!(status, 403, "{body}");
        let html = response.text().await.expect("html");
        answers.text(why, status, &html);
    }
    insta::assert_snapshot!(answers.render());
    let refused = post("/ui/container", None, "packages=samtools".into())
        .await
        .expect("post");
    assert_eq!(refused.status(), 403);

    let made = post(
        "/auth/tokens",
        Some(&cookie),
        format!("user=alice&form_token={token}"),
    )
    .await
    .expect("post");
    assert_eq!(made.status(), 200);
    assert!(made.text().await.expect("html").contains("kiln_"));
    let form = post(
        "/ui/container",
        Some(&cookie),
        format!("packages=not%20valid%3D%3D%3D&form_token={token}"),
    )
    .await
    .expect("post");
    assert_eq!(form.status(), 400, "the form's own checks run");

    let api = http
        .post(app.url("/api/v1/images"))
        .json(&serde_json::json!({"packages": ["===="]}))
        .send()
        .await
        .expect("post");
    assert_eq!(api.status(), 400, "JSON APIs need no form token");
}

/// An existing data directory and database with open modes are made private at start; new
/// ones are created private.
#[tokio::test]
async fn the_data_directory_and_database_are_private() {
    let parent = tempfile::tempdir().expect("temp dir");
    let data = parent.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(data.join("kiln.db"), b"").expect("an empty database");
    std::fs::set_permissions(data.join("kiln.db"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let dir = data.clone();
    let app = TestApp::start_with(move |config| config.data_dir = dir).await;
    let (status, _) = health(&app.url("/health"), Duration::from_secs(5)).await;
    assert_eq!(status, 200);
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700);
    for file in ["kiln.db", "kiln.db-wal", "kiln.db-shm"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    drop(app);

    let fresh = parent.path().join("fresh/data");
    let dir = fresh.clone();
    let app = TestApp::start_with(move |config| config.data_dir = dir).await;
    let (status, _) = health(&app.url("/health"), Duration::from_secs(5)).await;
    assert_eq!(status, 200);
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join("kiln.db")), 0o600);
    assert_eq!(mode(&fresh.join("kiln.db-wal")), 0o600);
}
