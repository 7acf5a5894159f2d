//! Registry benchmark: kiln's embedded OCI registry against CNCF Distribution
//! (Debian's `docker-registry` 2.8, `/usr/bin/docker-registry`), measured in the same run.
//!
//! For each registry it measures
//! 1. the push of one random blob (default 256 MiB): monolithic (`POST` then `PUT` with the
//!    whole body) and chunked (`PATCH` in 8 MiB chunks with `Content-Range`, then `PUT`);
//! 2. the pull of that blob (`GET`, streamed, hashed with sha256 to verify it);
//! 3. the push of many small, distinct OCI image manifests by tag (default 2,000, 16 concurrent
//!    pushers), then manifest `GET`s over random tags from 64 concurrent clients sharing one
//!    connection pool (default 20,000 in total): p50 and p99 latency and requests per second;
//!
//! and prints a table with the ratio of the two (above 1 always means kiln did better).
//!
//! kiln runs in-process, built like `tests/support/mod.rs` builds its test app, on a tokio
//! runtime of its own (the client has another), with a registry user; its writes use HTTP
//! Basic. Distribution runs as a child process with a filesystem store in a temporary directory
//! and no authentication. Both listen on 127.0.0.1 and store their data under the system's
//! temporary directory.
//!
//! ```sh
//! cargo bench --bench registry
//! # a quick run
//! KILN_BENCH_BLOB_MIB=32 KILN_BENCH_MANIFESTS=200 KILN_BENCH_GETS=2000 cargo bench --bench registry
//! ```

#[path = "../tests/support/mod.rs"]
pub mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use kiln::config::{Config, RegistryUser};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use support::rng::SplitMix64;

/// The registry user kiln accepts for pushes.
const PUSHER: (&str, &str) = ("kiln-bench", "bench-password");
const DISTRIBUTION_BIN: &str = "/usr/bin/docker-registry";
const CHUNK_SIZE: usize = 8 << 20;
const MANIFEST_PUSHERS: usize = 16;
const GET_CLIENTS: usize = 64;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const BLOB_REPO_MONOLITHIC: &str = "bench/blob-monolithic";
const BLOB_REPO_CHUNKED: &str = "bench/blob-chunked";
const MANIFEST_REPO: &str = "bench/manifests";

fn main() -> Result<()> {
    let sizes = Sizes::from_env()?;
    let kiln = KilnServer::start()?;
    let distribution = DistributionServer::start()?;
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = client_runtime.block_on(async {
        let client = Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .build()?;
        distribution.wait_ready(&client).await?;
        let blob = Blob::random(sizes.blob_mib << 20, 1);
        let kiln_results = measure(&client, &kiln.target, &sizes, &blob).await?;
        let distribution_results = measure(&client, &distribution.target, &sizes, &blob).await?;
        anyhow::Ok((kiln_results, distribution_results))
    })?;
    drop(client_runtime);
    print_report(&sizes, &results.0, &results.1);
    drop(distribution);
    drop(kiln);
    Ok(())
}

/// How much work each measurement does; overridable through the environment.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    blob_mib: usize,
    manifests: usize,
    gets: usize,
}

impl Sizes {
    /// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this file without it,
    /// as a smoke test that keeps the benchmark working, so then the default sizes are small.
    fn from_env() -> Result<Self> {
        let full = std::env::args().any(|arg| arg == "--bench");
        let (blob_mib, manifests, gets) = if full {
            (256, 2000, 20_000)
        } else {
            (8, 100, 1000)
        };
        let sizes = Sizes {
            blob_mib: env_or("KILN_BENCH_BLOB_MIB", blob_mib)?,
            manifests: env_or("KILN_BENCH_MANIFESTS", manifests)?,
            gets: env_or("KILN_BENCH_GETS", gets)?,
        };
        ensure!(
            sizes.blob_mib > 0 && sizes.manifests > 0 && sizes.gets > 0,
            "benchmark sizes must be positive: {sizes:?}"
        );
        Ok(sizes)
    }
}

fn env_or(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a count")),
        Err(_) => Ok(default),
    }
}

/// A registry under test.
#[derive(Debug, Clone)]
struct Target {
    name: &'static str,
    /// `http://127.0.0.1:<port>`
    base: Url,
    /// HTTP Basic credentials for writes, if the registry needs them.
    credentials: Option<(String, String)>,
}

impl Target {
    fn url(&self, path: &str) -> Result<Url> {
        Ok(self.base.join(path)?)
    }

    /// Adds the credentials writes need.
    fn write(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }
}

/// kiln's app and registry, served on a runtime of their own.
#[derive(Debug)]
struct KilnServer {
    target: Target,
    _data: tempfile::TempDir,
    // Dropped last: stops the server.
    _runtime: tokio::runtime::Runtime,
}

impl KilnServer {
    fn start() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("kiln-server")
            .build()?;
        let data = tempfile::tempdir()?;
        let mut config = Config {
            data_dir: data.path().to_owned(),
            ..Config::default()
        };
        config.embedded_registry.users = vec![RegistryUser::new(PUSHER.0, PUSHER.1, false)];
        let address = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let address = listener.local_addr()?;
            tokio::spawn(async move {
                if let Err(err) = kiln::server::run(config, listener, std::future::pending()).await
                {
                    eprintln!("kiln server stopped: {err:#}");
                }
            });
            anyhow::Ok(address)
        })?;
        Ok(KilnServer {
            target: Target {
                name: "kiln",
                base: base_url(address)?,
                credentials: Some((PUSHER.0.into(), PUSHER.1.into())),
            },
            _data: data,
            _runtime: runtime,
        })
    }
}

/// `docker-registry` running as a child process; killed on drop.
#[derive(Debug)]
struct DistributionServer {
    target: Target,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl DistributionServer {
    fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("storage");
        std::fs::create_dir(&root)?;
        let address = free_port()?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {address}\n  secret: bench\n",
                root.display()
            ),
        )?;
        let log = dir.path().join("registry.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(DISTRIBUTION_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {DISTRIBUTION_BIN}"))?;
        Ok(DistributionServer {
            target: Target {
                name: "distribution",
                base: base_url(address)?,
                credentials: None,
            },
            child,
            log,
            _dir: dir,
        })
    }

    /// Waits (at most 10 s) until `GET /v2/` answers 200.
    async fn wait_ready(&self, client: &Client) -> Result<()> {
        let url = self.target.url("/v2/")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match client.get(url.clone()).send().await {
                Ok(resp) if resp.status() == StatusCode::OK => return Ok(()),
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    bail!(
                        "{DISTRIBUTION_BIN} did not answer GET {url}: {other:?}\nits log:\n{log}"
                    );
                }
            }
        }
    }
}

impl Drop for DistributionServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

fn base_url(address: SocketAddr) -> Result<Url> {
    Ok(Url::parse(&format!("http://{address}"))?)
}

/// Content and digest of a blob.
#[derive(Debug, Clone)]
struct Blob {
    bytes: Bytes,
    digest: String,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Self {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        Blob {
            bytes: Bytes::from(bytes),
            digest,
        }
    }

    /// `len` pseudo-random bytes (splitmix64 from `seed`).
    fn random(len: usize, seed: u64) -> Self {
        let mut rng = SplitMix64(seed);
        let mut bytes = Vec::with_capacity(len + 8);
        while bytes.len() < len {
            bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        bytes.truncate(len);
        Blob::new(bytes)
    }

    fn descriptor(&self, media_type: &str) -> serde_json::Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// Sends a request and fails, naming the request and showing the response, unless the status is
/// `expected`.
async fn send(request: RequestBuilder, expected: StatusCode) -> Result<Response> {
    let (client, request) = request.build_split();
    let request = request?;
    let what = format!("{} {}", request.method(), request.url());
    let resp = client.execute(request).await.context(what.clone())?;
    if resp.status() != expected {
        let status = resp.status();
        let headers = format!("{:?}", resp.headers());
        let body = resp.text().await.unwrap_or_default();
        bail!("{what}: expected {expected}, got {status}\nheaders: {headers}\nbody: {body}");
    }
    Ok(resp)
}

/// The upload location a response points to, made absolute.
fn upload_location(target: &Target, resp: &Response) -> Result<Url> {
    let location = resp
        .headers()
        .get(LOCATION)
        .context("response without Location")?
        .to_str()?;
    target.url(location)
}

/// `POST /v2/<repo>/blobs/uploads/`; returns the session's location.
async fn start_upload(client: &Client, target: &Target, repo: &str) -> Result<Url> {
    let url = target.url(&format!("/v2/{repo}/blobs/uploads/"))?;
    let request = target.write(client.post(url)).header(CONTENT_LENGTH, "0");
    let resp = send(request, StatusCode::ACCEPTED).await?;
    upload_location(target, &resp)
}

/// `PUT <location>?digest=…` with the last (or only) part of the blob.
async fn finish_upload(
    client: &Client,
    target: &Target,
    mut location: Url,
    digest: &str,
    body: Bytes,
) -> Result<()> {
    location.query_pairs_mut().append_pair("digest", digest);
    let request = target
        .write(client.put(location))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(body);
    send(request, StatusCode::CREATED).await?;
    Ok(())
}

async fn push_monolithic(client: &Client, target: &Target, repo: &str, blob: &Blob) -> Result<()> {
    let location = start_upload(client, target, repo).await?;
    finish_upload(client, target, location, &blob.digest, blob.bytes.clone()).await
}

async fn push_chunked(client: &Client, target: &Target, repo: &str, blob: &Blob) -> Result<()> {
    let mut location = start_upload(client, target, repo).await?;
    let len = blob.bytes.len();
    for start in (0..len).step_by(CHUNK_SIZE) {
        let end = (start + CHUNK_SIZE).min(len);
        let request = target
            .write(client.patch(location.clone()))
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_RANGE, format!("{start}-{}", end - 1))
            .body(blob.bytes.slice(start..end));
        let resp = send(request, StatusCode::ACCEPTED).await?;
        location = upload_location(target, &resp)?;
    }
    finish_upload(client, target, location, &blob.digest, Bytes::new()).await
}

/// Pulls a blob, hashing the streamed body; fails unless it is the blob.
async fn pull(client: &Client, target: &Target, repo: &str, blob: &Blob) -> Result<()> {
    let url = target.url(&format!("/v2/{repo}/blobs/{}", blob.digest))?;
    let mut resp = send(client.get(url), StatusCode::OK).await?;
    let mut hasher = Sha256::new();
    let mut received = 0;
    while let Some(chunk) = resp.chunk().await? {
        received += chunk.len();
        hasher.update(&chunk);
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    ensure!(
        received == blob.bytes.len() && digest == blob.digest,
        "pulled {received} bytes with {digest}, expected {} bytes with {}",
        blob.bytes.len(),
        blob.digest
    );
    Ok(())
}

/// Megabytes (10^6 bytes) per second.
fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

/// `n` distinct image manifests, all referencing `config` and `layer`.
fn manifests(n: usize, config: &Blob, layer: &Blob) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(OCI_CONFIG),
                "layers": [layer.descriptor(OCI_LAYER)],
                "annotations": { "org.example.kiln-bench.index": i.to_string() },
            });
            Bytes::from(manifest.to_string())
        })
        .collect()
}

fn tag(i: usize) -> String {
    format!("t{i:05}")
}

/// Pushes the manifests' blobs, then the manifests by tag from [`MANIFEST_PUSHERS`] tasks;
/// returns the time the manifests took.
async fn push_manifests(client: &Client, target: &Target, n: usize) -> Result<Duration> {
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [] },
    });
    let config = Blob::new(config.to_string().into_bytes());
    let layer = Blob::random(4096, 2);
    for blob in [&config, &layer] {
        push_monolithic(client, target, MANIFEST_REPO, blob).await?;
    }
    let manifests = Arc::new(manifests(n, &config, &layer));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let pushers: Vec<_> = (0..MANIFEST_PUSHERS)
        .map(|_| {
            let (client, target) = (client.clone(), target.clone());
            let (manifests, next) = (manifests.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(manifest) = manifests.get(i) else {
                        return anyhow::Ok(());
                    };
                    let url = target.url(&format!("/v2/{MANIFEST_REPO}/manifests/{}", tag(i)))?;
                    let request = target
                        .write(client.put(url))
                        .header(CONTENT_TYPE, OCI_MANIFEST)
                        .body(manifest.clone());
                    send(request, StatusCode::CREATED).await?;
                }
            })
        })
        .collect();
    for pusher in pushers {
        pusher.await??;
    }
    Ok(started.elapsed())
}

/// Latencies of manifest GETs and the rate they were served at.
#[derive(Debug)]
struct GetStats {
    p50: Duration,
    p99: Duration,
    per_s: f64,
}

/// `gets` manifest GETs over random tags among the first `n`, from [`GET_CLIENTS`] tasks.
async fn get_manifests(
    client: &Client,
    target: &Target,
    n: usize,
    gets: usize,
) -> Result<GetStats> {
    let started = Instant::now();
    let clients: Vec<_> = (0..GET_CLIENTS)
        .map(|c| {
            let (client, target) = (client.clone(), target.clone());
            let count = gets / GET_CLIENTS + usize::from(c < gets % GET_CLIENTS);
            tokio::spawn(async move {
                let mut rng = SplitMix64(1000 + c as u64);
                let mut latencies = Vec::with_capacity(count);
                for _ in 0..count {
                    let i = rng.below(n);
                    let url = target.url(&format!("/v2/{MANIFEST_REPO}/manifests/{}", tag(i)))?;
                    let sent = Instant::now();
                    let request = client.get(url).header(ACCEPT, OCI_MANIFEST);
                    let body = send(request, StatusCode::OK).await?.bytes().await?;
                    latencies.push(sent.elapsed());
                    ensure!(!body.is_empty(), "empty manifest for tag {}", tag(i));
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(gets);
    for c in clients {
        latencies.extend(c.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let percentile = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Ok(GetStats {
        p50: percentile(0.50),
        p99: percentile(0.99),
        per_s: gets as f64 / elapsed.as_secs_f64(),
    })
}

/// Everything measured on one registry.
#[derive(Debug)]
struct Results {
    push_monolithic_mb_s: f64,
    push_chunked_mb_s: f64,
    pull_mb_s: f64,
    manifest_push_per_s: f64,
    gets: GetStats,
}

async fn measure(client: &Client, target: &Target, sizes: &Sizes, blob: &Blob) -> Result<Results> {
    eprintln!("measuring {} at {}", target.name, target.base);
    let len = blob.bytes.len();
    let started = Instant::now();
    push_monolithic(client, target, BLOB_REPO_MONOLITHIC, blob).await?;
    let push_monolithic_mb_s = mb_per_s(len, started.elapsed());
    let started = Instant::now();
    push_chunked(client, target, BLOB_REPO_CHUNKED, blob).await?;
    let push_chunked_mb_s = mb_per_s(len, started.elapsed());
    let started = Instant::now();
    pull(client, target, BLOB_REPO_MONOLITHIC, blob).await?;
    let pull_mb_s = mb_per_s(len, started.elapsed());
    let elapsed = push_manifests(client, target, sizes.manifests).await?;
    let manifest_push_per_s = sizes.manifests as f64 / elapsed.as_secs_f64();
    let gets = get_manifests(client, target, sizes.manifests, sizes.gets).await?;
    Ok(Results {
        push_monolithic_mb_s,
        push_chunked_mb_s,
        pull_mb_s,
        manifest_push_per_s,
        gets,
    })
}

fn print_report(sizes: &Sizes, kiln: &Results, distribution: &Results) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // (metric, kiln, distribution, whether higher is better)
    let rows = [
        (
            "blob push, monolithic (MB/s)",
            kiln.push_monolithic_mb_s,
            distribution.push_monolithic_mb_s,
            true,
        ),
        (
            "blob push, chunked 8 MiB (MB/s)",
            kiln.push_chunked_mb_s,
            distribution.push_chunked_mb_s,
            true,
        ),
        (
            "blob pull + sha256 check (MB/s)",
            kiln.pull_mb_s,
            distribution.pull_mb_s,
            true,
        ),
        (
            "manifest push (manifests/s)",
            kiln.manifest_push_per_s,
            distribution.manifest_push_per_s,
            true,
        ),
        (
            "manifest GET p50 (ms)",
            ms(kiln.gets.p50),
            ms(distribution.gets.p50),
            false,
        ),
        (
            "manifest GET p99 (ms)",
            ms(kiln.gets.p99),
            ms(distribution.gets.p99),
            false,
        ),
        (
            "manifest GET (requests/s)",
            kiln.gets.per_s,
            distribution.gets.per_s,
            true,
        ),
    ];
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nregistry benchmark: kiln (embedded) vs CNCF Distribution ({DISTRIBUTION_BIN})"
    );
    let _ = writeln!(
        out,
        "machine: {cpus} CPUs (nproc); both on 127.0.0.1, data in the temp directory"
    );
    let _ = writeln!(
        out,
        "sizes: blob {} MiB (chunks of {} MiB); {} manifests pushed by {MANIFEST_PUSHERS} clients; \
         {} manifest GETs from {GET_CLIENTS} clients",
        sizes.blob_mib,
        CHUNK_SIZE >> 20,
        sizes.manifests,
        sizes.gets
    );
    let _ = writeln!(
        out,
        "auth: kiln pushes with HTTP Basic; distribution runs without auth"
    );
    let _ = writeln!(out, "MB = 10^6 bytes\n");
    let _ = writeln!(
        out,
        "| {:<33} | {:>10} | {:>12} | {:>33} |",
        "metric", "kiln", "distribution", "ratio (>1 = kiln better)"
    );
    let _ = writeln!(out, "|{:-<35}|{:->12}|{:->14}|{:->35}|", "", ":", ":", ":");
    for (metric, k, d, higher_is_better) in rows {
        let (ratio, how) = if higher_is_better {
            (k / d, "kiln/distribution")
        } else {
            (d / k, "distribution/kiln")
        };
        let _ = writeln!(
            out,
            "| {metric:<33} | {k:>10.2} | {d:>12.2} | {:>33} |",
            format!("{ratio:.2} ({how})")
        );
    }
    print!("{out}");
}
