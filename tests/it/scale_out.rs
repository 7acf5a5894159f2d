//! kiln past one machine, end to end: PostgreSQL from Debian's packages, CNCF Distribution with
//! htpasswd as the only registry, two `--role api` and two `--role worker` processes of the built
//! binary sharing one database URL, secret key and external registry. Then the checks:
//! 20 different requests split across both API nodes are each built once; 100 concurrent
//! identical requests across both nodes make one build; a remote build submitted on one node is
//! followed and pulled on the other; an anonymous allowance spent on one node holds on the
//! other; `kill -9` of the worker running a build hands it to the other worker when the lease
//! ends; and Distribution itself holds every image.
//!
//! Builds are native builds of tiny generated conda packages from a channel on 127.0.0.1 on a
//! one-layer base, so the test spends its time on kiln's coordination, not on downloads.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::{Method, Uri};
use base64::Engine as _;
use futures_util::StreamExt as _;
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::support::bench_channel::{CHANNEL_NAME, Channel};
use crate::support::cluster::{Cluster, Node, Shared};
use crate::support::conda_channel::serve_file;
use crate::support::distribution::Distribution;
use crate::support::postgres::PostgresServer;
use crate::support::{bench_base, forms};

/// Not limited by the anonymous allowance: the requests that test joining and building once.
const OPERATOR: &str = "scale-operator-token";
/// The base every build here stacks on, in Distribution.
const BASE_REPOSITORY: &str = "kiln/base/bench";
const BASE_TAG: &str = "1";
/// Anonymous builds a client may start per day, on any node.
const ALLOWANCE: usize = 3;
/// The package whose download the channel holds until the test lets it go.
const HELD_PACKAGE: &str = "scale-held";
/// Longest any one build here may take, queueing included.
const BUILD_LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_api_and_two_worker_processes_share_one_database_and_registry() {
    // Started once per test binary (initdb takes seconds); the database is this run's own.
    let postgres = tokio::task::spawn_blocking(PostgresServer::shared)
        .await
        .expect("PostgreSQL starts");
    let database_url = postgres.url().await;
    let distribution = Distribution::start().await;
    let pusher = RegistryClient::new(
        &distribution.host,
        Auth::Basic(Credentials::new(distribution.user, distribution.password)),
        &[],
    )
    .expect("registry client");
    bench_base::push_base(&pusher, BASE_REPOSITORY, BASE_TAG)
        .await
        .expect("the base is pushed to Distribution");

    let names: Vec<String> = (1..=20)
        .map(|i| format!("scale-{i:02}"))
        .chain((1..=ALLOWANCE + 1).map(|i| format!("scale-allowance-{i}")))
        .chain([HELD_PACKAGE.to_owned()])
        .collect();
    let channel = Channel::generate(&names, 16 << 10).expect("the channel is generated");
    let held = HeldDownload::new();
    let channel_url = serve_holding(channel.dir.clone(), held.clone()).await;

    let shared = Shared {
        database_url: &database_url,
        distribution: &distribution,
        channel: CHANNEL_NAME,
        channel_url: &channel_url,
        base: &format!("{BASE_REPOSITORY}:{BASE_TAG}"),
    };
    // One build at a time per worker, and a short lease, so a dead worker's build is free soon;
    // not shorter, so a worker slowed by a busy CI machine still renews it (every third) in time.
    let settings = shared.settings(
        "workers = 1\nlease_secs = 5",
        &format!(
            "wait_for_build_ms = 0\ntokens = [\"{OPERATOR}\"]\nanonymous_builds_per_day = {ALLOWANCE}"
        ),
    );
    let cluster = Cluster::start(2, 2, &settings).await;
    let (a, b) = (&cluster.apis[0], &cluster.apis[1]);
    let mut images = BTreeSet::new();

    // 20 different requests, alternately on each API node: 20 builds, each run once.
    let mut builds = Vec::new();
    for (i, name) in names[..20].iter().enumerate() {
        let node = &cluster.apis[i % 2];
        let (status, answer) = request(node, &[name], Some(OPERATOR)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["cached"], false, "{answer}");
        builds.push((
            build_id(&answer),
            answer["image"].as_str().expect("image").to_owned(),
        ));
    }
    for (i, (id, image)) in builds.iter().enumerate() {
        let done = until_done(&cluster.apis[(i + 1) % 2], id).await;
        assert_eq!(done["succeeded"], true, "{done}\n{}", cluster.logs());
        images.insert(image.clone());
    }
    let ids: BTreeSet<&String> = builds.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 20, "20 requests, 20 builds: {ids:?}");
    assert_eq!(succeeded(&cluster).await, 20.0, "each built exactly once");
    assert_eq!(
        cluster
            .workers_metric("kiln_builds_total", "outcome=\"failed\"")
            .await,
        0.0
    );
    for (i, name) in names[..20].iter().enumerate() {
        // Asked again on the node it was not asked on first: answered from what is there.
        let (status, answer) = request(&cluster.apis[(i + 1) % 2], &[name], Some(OPERATOR)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["cached"], true, "{answer}");
    }
    assert_eq!(succeeded(&cluster).await, 20.0, "cache hits build nothing");

    // 100 identical requests at once, across both nodes: one build, all joined to it.
    let pair = [names[0].as_str(), names[1].as_str()];
    let answers = futures_util::future::join_all(
        (0..100).map(|i| request(&cluster.apis[i % 2], &pair, Some(OPERATOR))),
    )
    .await;
    let mut joined = BTreeSet::new();
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        joined.insert(build_id(answer));
        images.insert(answer["image"].as_str().expect("image").to_owned());
    }
    assert_eq!(
        joined.len(),
        1,
        "100 identical requests, one build: {joined:?}"
    );
    let id = joined.pop_first().expect("one build");
    assert_eq!(until_done(b, &id).await["succeeded"], true);
    assert_eq!(
        succeeded(&cluster).await,
        21.0,
        "the 100 requests made one build"
    );

    // A remote build: context uploaded through a ticket from A and redeemed on B, submitted on
    // A, its log followed on B's websocket, its SIF pulled from B.
    remote_build(a, b, &distribution.host).await;

    // The anonymous allowance spent on A holds on B.
    for name in &names[20..20 + ALLOWANCE] {
        let (status, answer) = request(a, &[name], None).await;
        assert_eq!(status, 200, "{answer}");
        let id = build_id(&answer);
        assert_eq!(until_done(a, &id).await["succeeded"], true);
        images.insert(answer["image"].as_str().expect("image").to_owned());
    }
    let (status, answer) = request(b, &[&names[20 + ALLOWANCE]], None).await;
    assert_eq!(
        status, 429,
        "the fourth new build on the other node: {answer}"
    );
    assert!(
        answer["retry-after"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|secs| secs > 0),
        "429 says when to retry: {answer}"
    );
    // Joining a build already made costs nothing, allowance spent or not.
    let (status, answer) = request(b, &[&names[20]], None).await;
    assert_eq!(status, 200, "{answer}");

    // kill -9 of the worker running a build: the other takes it over when the lease ends.
    let mut cluster = cluster;
    let (status, answer) = request(&cluster.apis[0], &[HELD_PACKAGE], Some(OPERATOR)).await;
    assert_eq!(status, 200, "{answer}");
    let id = build_id(&answer);
    images.insert(answer["image"].as_str().expect("image").to_owned());
    tokio::time::timeout(BUILD_LIMIT, held.asked.notified())
        .await
        .expect("a worker started the build and asked for the held package");
    let mut running = None;
    for (i, worker) in cluster.workers.iter().enumerate() {
        if worker.metric("kiln_builds_in_progress", "").await == 1.0 {
            running = Some(i);
        }
    }
    let running = running.expect("one worker runs the build");
    let survivor = 1 - running;
    let survivor_before = cluster.workers[survivor]
        .metric("kiln_builds_total", "outcome=\"succeeded\"")
        .await;
    cluster.workers[running].kill_hard();
    held.release();
    let done = until_done(&cluster.apis[1], &id).await;
    let log = reqwest::get(cluster.apis[1].url(&format!("/v1alpha1/builds/{id}/logs")))
        .await
        .expect("GET log")
        .text()
        .await
        .expect("log");
    assert_eq!(done["succeeded"], true, "{done}\n{log}\n{}", cluster.logs());
    assert!(
        log.contains("started again"),
        "the build was taken over: {log}"
    );
    assert_eq!(
        cluster.workers[survivor]
            .metric("kiln_builds_total", "outcome=\"succeeded\"")
            .await,
        survivor_before + 1.0,
        "the surviving worker finished it"
    );

    // Distribution, asked directly, has every image kiln answered with.
    for image in &images {
        let output = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--creds"])
            .arg(distribution.creds())
            .arg(format!("docker://{image}"))
            .output()
            .expect("skopeo runs");
        assert!(
            output.status.success(),
            "skopeo inspect {image}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let inspected: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert!(
            inspected["Digest"]
                .as_str()
                .is_some_and(|d| d.starts_with("sha256:"))
        );
    }
    assert_eq!(images.len(), 20 + 1 + ALLOWANCE + 1, "{images:?}");
}

/// `POST /api/v1/images` on `node` for `packages` of the bench channel, for linux/amd64; the
/// status and the answer (with `retry-after` copied in when sent).
async fn request(node: &Node, packages: &[&str], token: Option<&str>) -> (u16, Value) {
    let mut post = reqwest::Client::new()
        .post(node.url("/api/v1/images"))
        .json(&json!({
            "packages": packages,
            "channels": [CHANNEL_NAME],
            "platforms": ["linux/amd64"],
        }));
    if let Some(token) = token {
        post = post.bearer_auth(token);
    }
    let response = post.send().await.expect("POST /api/v1/images");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").cloned();
    let mut answer: Value = response.json().await.expect("JSON");
    if let Some(retry_after) = retry_after {
        answer["retry-after"] = json!(retry_after.to_str().expect("ASCII"));
    }
    (status, answer)
}

fn build_id(answer: &Value) -> String {
    answer["build"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a build: {answer}"))
        .to_owned()
}

/// Polls `GET /api/v1/builds/{id}` on `node` until the build is done; the record.
async fn until_done(node: &Node, id: &str) -> Value {
    let deadline = Instant::now() + BUILD_LIMIT;
    loop {
        if let Ok(response) = reqwest::get(node.url(&format!("/api/v1/builds/{id}"))).await
            && response.status() == 200
        {
            let build: Value = response.json().await.expect("JSON");
            if build["status"] == "DONE" {
                return build;
            }
        }
        assert!(
            Instant::now() < deadline,
            "build {id} not done in {BUILD_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Builds the running workers finished successfully.
async fn succeeded(cluster: &Cluster) -> f64 {
    cluster
        .workers_metric("kiln_builds_total", "outcome=\"succeeded\"")
        .await
}

/// A definition with `%files` from an uploaded context: the ticket is issued by `a` and
/// redeemed at `b` (signed, not remembered), the build submitted on `a`, its websocket log
/// read on `b` to the end, and its SIF pulled from `b` with the library protocol.
async fn remote_build(a: &Node, b: &Node, registry: &str) {
    let token = forms::signup_token(&a.url("/auth/tokens"), "alice").await;
    let text = "carried from node to node\n";
    let (context, digest) = context_with("data.txt", text);
    let announced = reqwest::Client::new()
        .post(a.url("/v1/build-context"))
        .header("Authorization", format!("BEARER {token}"))
        .json(&json!({"size": context.len(), "digest": digest}))
        .send()
        .await
        .expect("announce");
    assert_eq!(announced.status(), 200);
    let location = announced.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let path = location
        .find("/v1/build-context/uploads/")
        .map(|at| &location[at..])
        .expect("an upload path");
    let uploaded = reqwest::Client::new()
        .put(b.url(path))
        .header("Content-Type", "application/octet-stream")
        .body(context)
        .send()
        .await
        .expect("upload");
    assert!(uploaded.status().is_success(), "{}", uploaded.status());

    let definition = format!(
        "Bootstrap: docker\nFrom: {registry}/{BASE_REPOSITORY}:{BASE_TAG}\n\
         %files\n    data.txt /data.txt\n%labels\n    Node a\n"
    );
    let submitted = reqwest::Client::new()
        .post(a.url("/v1/build"))
        .header("Authorization", format!("BEARER {token}"))
        .json(&json!({
            "definitionRaw": base64::engine::general_purpose::STANDARD.encode(&definition),
            "libraryRef": "",
            "libraryURL": a.url(""),
            "builderRequirements": {"arch": "amd64"},
            "workingDir": "/home/alice",
            "contextDigest": digest,
        }))
        .send()
        .await
        .expect("submit");
    assert_eq!(submitted.status(), 200);
    let info: Value = submitted.json().await.expect("JSON");
    let id = info["data"]["id"].as_str().expect("id").to_owned();

    let mut ws = format!("ws://{}/v1/build-ws/{id}", b.host())
        .into_client_request()
        .expect("ws request");
    ws.headers_mut().insert(
        "Authorization",
        format!("BEARER {token}").parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws)
        .await
        .expect("websocket handshake on node B");
    let mut log = String::new();
    let followed = tokio::time::timeout(BUILD_LIMIT, async {
        while let Some(message) = socket.next().await {
            match message.expect("websocket message") {
                Message::Text(text) => log.push_str(&text),
                Message::Close(_) => break,
                _ => {}
            }
        }
    })
    .await;
    assert!(followed.is_ok(), "the log on B did not end: {log}");
    assert!(
        log.contains("pushed library://alice/remote-builds/"),
        "{log}"
    );

    let status: Value = reqwest::Client::new()
        .get(b.url(&format!("/v1/build/{id}")))
        .header("Authorization", format!("BEARER {token}"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("JSON");
    assert_eq!(status["data"]["isComplete"], true, "{status}");
    let reference = status["data"]["libraryRef"]
        .as_str()
        .and_then(|r| r.strip_prefix("library://"))
        .expect("a library reference")
        .to_owned();
    let record: Value = reqwest::Client::new()
        .get(b.url(&format!("/v1/images/{reference}?arch=amd64")))
        .header("Authorization", format!("BEARER {token}"))
        .send()
        .await
        .expect("image record")
        .json()
        .await
        .expect("JSON");
    let file = reqwest::Client::new()
        .get(b.url(&format!("/v1/imagefile/{reference}?arch=amd64")))
        .header("Authorization", format!("BEARER {token}"))
        .send()
        .await
        .expect("image file");
    assert_eq!(file.status(), 200);
    let sif = file.bytes().await.expect("SIF");
    assert_eq!(
        record["data"]["hash"],
        format!("sha256.{}", hex::encode(Sha256::digest(&sif))),
        "{record}"
    );
    assert!(
        sif.windows(4).any(|w| w == b"hsqs"),
        "the pulled file holds a squashfs file system"
    );
    assert_eq!(
        status["data"]["imageChecksum"],
        json!(format!("sha256.{}", hex::encode(Sha256::digest(&sif)))),
        "{status}"
    );
}

/// A gzipped tar holding `home/alice/<name>` with `text`, as scs-build packs `%files`; and its
/// `sha256.<hex>` digest.
fn context_with(name: &str, text: &str) -> (Vec<u8>, String) {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, format!("home/alice/{name}"), text.as_bytes())
        .expect("tar");
    let bytes = tar.into_inner().expect("tar").finish().expect("gzip");
    let digest = format!("sha256.{}", hex::encode(Sha256::digest(&bytes)));
    (bytes, digest)
}

/// The held package's downloads wait until [`HeldDownload::release`]; `asked` is told when
/// the first one arrives, so the test knows a worker is mid-build without timing anything.
#[derive(Debug)]
struct HeldDownload {
    asked: Notify,
    released: AtomicBool,
    release: Notify,
}

impl HeldDownload {
    fn new() -> Arc<HeldDownload> {
        Arc::new(HeldDownload {
            asked: Notify::new(),
            released: AtomicBool::new(false),
            release: Notify::new(),
        })
    }

    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.release.notify_waiters();
    }

    async fn wait(&self) {
        let released = self.release.notified();
        if !self.released.load(Ordering::SeqCst) {
            self.asked.notify_one();
            released.await;
        }
    }
}

/// Serves the bench channel directory `dir` on 127.0.0.1 like `bench_channel::serve`, except
/// that archives of [`HELD_PACKAGE`] wait for `held`; the channel URL.
async fn serve_holding(dir: std::path::PathBuf, held: Arc<HeldDownload>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let router = axum::Router::new().fallback(move |method: Method, uri: Uri| {
        let (dir, held) = (dir.clone(), held.clone());
        async move {
            if uri.path().contains(&format!("/{HELD_PACKAGE}-")) {
                held.wait().await;
            }
            serve_file(&dir, CHANNEL_NAME, &method, &uri).await
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{address}/{CHANNEL_NAME}")
}
