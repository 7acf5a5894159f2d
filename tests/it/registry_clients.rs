//! Real registry clients against kiln's embedded registry.
//!
//! Each test starts kiln in-process and drives one client the way a user would, over plain
//! HTTP: skopeo and buildah (containers/image), crane (go-containerregistry) and oras
//! (oras-go). The tests prove that pushes with HTTP Basic credentials land, that anonymous pulls
//! give back the same bytes, that cross-repository blob mounts work, and that what each client
//! reports (digests, raw manifests, tags, blobs) agrees with what kiln itself serves: the
//! `Docker-Content-Digest` of a `HEAD` on the manifest, the manifest bytes' sha256 and the blobs
//! under `/v2/<name>/blobs/`. A push without credentials must be refused.
//!
//! skopeo and buildah come from the system (`scripts/test` installs them); crane and oras are
//! built, pinned, into `target/tools/` by `tests/support/go-tools.sh` (it needs Go). Client
//! configuration (auth files, `DOCKER_CONFIG`, `REGISTRY_AUTH_FILE`) lives in temporary
//! directories. Test images are made from scratch with buildah, without any network, and removed
//! afterwards.

use crate::support::go_tools;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::support::{PUSHER, TestApp};
use go_tools::tool;

/// The manifest media types kiln is asked for, as clients ask.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

// ---------------------------------------------------------------------------------------------
// Running clients
// ---------------------------------------------------------------------------------------------

/// Runs a client command and returns its output; panics with the command line, status, stdout
/// and stderr when the client is missing or fails.
fn run(cmd: &mut Command) -> Output {
    let output = spawn(cmd);
    assert!(
        output.status.success(),
        "{} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        describe(cmd),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a client command that must fail; returns its stderr.
fn run_refused(cmd: &mut Command) -> String {
    let output = spawn(cmd);
    assert!(
        !output.status.success(),
        "{} succeeded but should have been refused:\nstdout:\n{}\nstderr:\n{}",
        describe(cmd),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn spawn(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|err| {
        panic!(
            "{} could not be started: {err} (skopeo and buildah come from apt; scripts/test \
             installs them)",
            describe(cmd)
        )
    })
}

fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    format!("`{line}`")
}

fn stdout_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Client configuration kept out of the user's home: an empty `DOCKER_CONFIG` directory for
/// crane and oras, and a `REGISTRY_AUTH_FILE` for skopeo and buildah.
struct ClientConfig {
    dir: tempfile::TempDir,
}

impl ClientConfig {
    fn new() -> ClientConfig {
        let dir = tempfile::tempdir().expect("temp dir");
        // buildah refuses a REGISTRY_AUTH_FILE that does not exist.
        std::fs::write(dir.path().join("auth.json"), r#"{"auths":{}}"#).expect("write auth.json");
        ClientConfig { dir }
    }

    /// A command for `program` using only this configuration.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DOCKER_CONFIG", self.dir.path())
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"));
        cmd
    }

    fn crane(&self) -> Command {
        self.command(tool("crane"))
    }

    fn oras(&self) -> Command {
        self.command(tool("oras"))
    }
}

fn pusher_creds() -> String {
    format!("{}:{}", PUSHER.0, PUSHER.1)
}

// ---------------------------------------------------------------------------------------------
// Test images and files
// ---------------------------------------------------------------------------------------------

/// A small image in local containers-storage, built from scratch with one layer per file;
/// removed on drop.
struct TinyImage {
    name: String,
}

impl TinyImage {
    /// Builds `localhost/kiln-clients/tiny:<unique>` holding `files` (path in the image,
    /// content), each file in its own layer.
    fn build(files: &[(&str, &str)]) -> TinyImage {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let name = format!("localhost/kiln-clients/tiny:{unique}");
        let sources = tempfile::tempdir().expect("temp dir");
        let mut base = "scratch".to_owned();
        for (i, (path, content)) in files.iter().enumerate() {
            let source = sources.path().join(format!("file{i}"));
            std::fs::write(&source, content).expect("write a layer file");
            let container = stdout_text(&run(Command::new("buildah").args(["from", &base])));
            run(Command::new("buildah")
                .arg("copy")
                .arg(&container)
                .arg(&source)
                .arg(path));
            run(Command::new("buildah")
                .args(["config", "--os", "linux", "--arch", "amd64", &container]));
            let step = if i + 1 == files.len() {
                name.clone()
            } else {
                format!("{name}-layer{i}")
            };
            run(Command::new("buildah").args(["commit", "--quiet", &container, &step]));
            run(Command::new("buildah").args(["rm", &container]));
            if base != "scratch" {
                remove_image(&base);
            }
            base = step;
        }
        TinyImage { name }
    }

    /// The image's ID (its config digest, without `sha256:`) and its layers' diff IDs.
    fn id_and_diff_ids(&self) -> (String, Vec<String>) {
        image_id_and_diff_ids(&self.name)
    }
}

impl Drop for TinyImage {
    fn drop(&mut self) {
        remove_image(&self.name);
    }
}

fn remove_image(name: &str) {
    let _ = Command::new("buildah").args(["rmi", "-f", name]).output();
}

fn image_id_and_diff_ids(name: &str) -> (String, Vec<String>) {
    let inspect = run(Command::new("buildah").args(["inspect", "--type", "image", name]));
    let inspect: Value = serde_json::from_slice(&inspect.stdout).expect("buildah inspect JSON");
    let id = inspect["FromImageID"]
        .as_str()
        .expect("buildah inspect gives FromImageID")
        .to_owned();
    let diff_ids = inspect["OCIv1"]["rootfs"]["diff_ids"]
        .as_array()
        .expect("buildah inspect gives OCIv1.rootfs.diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff id").to_owned())
        .collect();
    (id, diff_ids)
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is JSON: {e}", path.display()))
}

/// The digests of a manifest's layers.
fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("manifest has layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("layer digest").to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What kiln serves
// ---------------------------------------------------------------------------------------------

/// Reads from kiln directly, anonymously, as the source of truth the clients are checked
/// against.
struct Kiln<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
}

impl<'a> Kiln<'a> {
    fn new(app: &'a TestApp) -> Kiln<'a> {
        Kiln {
            app,
            http: reqwest::Client::new(),
        }
    }

    /// `host:port`, as clients name the registry.
    fn host(&self) -> String {
        self.app.address.to_string()
    }

    /// `host:port/<repo>:<tag>`.
    fn reference(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.host())
    }

    /// A `HEAD` on the manifest.
    async fn head(&self, repo: &str, reference: &str) -> reqwest::Response {
        let url = self.app.url(&format!("/v2/{repo}/manifests/{reference}"));
        self.http
            .head(&url)
            .header("Accept", MANIFEST_ACCEPT)
            .send()
            .await
            .expect("HEAD manifest")
    }

    /// The `Docker-Content-Digest` of a `HEAD` on the manifest.
    async fn head_digest(&self, repo: &str, reference: &str) -> String {
        let resp = self.head(repo, reference).await;
        assert_eq!(resp.status(), 200, "HEAD {repo}:{reference}");
        resp.headers()["docker-content-digest"]
            .to_str()
            .expect("digest header is text")
            .to_owned()
    }

    /// The status of a `HEAD` on the manifest.
    async fn head_status(&self, repo: &str, reference: &str) -> u16 {
        self.head(repo, reference).await.status().as_u16()
    }

    /// The manifest's bytes, as served.
    async fn manifest(&self, repo: &str, reference: &str) -> Vec<u8> {
        let url = self.app.url(&format!("/v2/{repo}/manifests/{reference}"));
        self.get(&url).await
    }

    /// A blob's bytes, as served.
    async fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let url = self.app.url(&format!("/v2/{repo}/blobs/{digest}"));
        self.get(&url).await
    }

    async fn get(&self, url: &str) -> Vec<u8> {
        let resp = self
            .http
            .get(url)
            .header("Accept", MANIFEST_ACCEPT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(resp.status(), 200, "GET {url}");
        resp.bytes().await.expect("response body").to_vec()
    }
}

// ---------------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_copies_an_image_in_and_out_with_matching_digests_and_blobs() {
    let app = TestApp::start().await;
    let kiln = Kiln::new(&app);
    let config = ClientConfig::new();
    let image = TinyImage::build(&[
        ("/hello.txt", "hello from skopeo\n"),
        ("/second.txt", "a second layer\n"),
    ]);
    let remote = format!("docker://{}", kiln.reference("clients/skopeo", "v1"));
    let work = tempfile::tempdir().expect("temp dir");
    let digest_file = work.path().join("pushed.digest");

    run(config
        .command("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds"])
        .arg(pusher_creds())
        .arg("--digestfile")
        .arg(&digest_file)
        .arg(format!("containers-storage:{}", image.name))
        .arg(&remote));

    let served_digest = kiln.head_digest("clients/skopeo", "v1").await;
    let served = kiln.manifest("clients/skopeo", "v1").await;
    assert_eq!(
        sha256_digest(&served),
        served_digest,
        "kiln's Docker-Content-Digest is the sha256 of the manifest bytes it serves"
    );
    let pushed_digest = std::fs::read_to_string(&digest_file).expect("skopeo wrote --digestfile");
    assert_eq!(pushed_digest.trim(), served_digest, "skopeo's --digestfile");

    let raw = run(config
        .command("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(&remote));
    assert_eq!(
        raw.stdout, served,
        "`skopeo inspect --raw` shows the bytes kiln serves"
    );
    let inspect = run(config
        .command("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(&remote));
    let inspect: Value = serde_json::from_slice(&inspect.stdout).expect("skopeo inspect JSON");
    assert_eq!(inspect["Digest"], served_digest.as_str(), "skopeo inspect");
    let manifest: Value = serde_json::from_slice(&served).expect("manifest JSON");
    let layers = layer_digests(&manifest);
    assert_eq!(layers.len(), 2, "one layer per file: {manifest}");
    assert_eq!(
        inspect["Layers"],
        serde_json::json!(layers),
        "skopeo inspect"
    );

    // And back out into an OCI layout, anonymously.
    let layout = work.path().join("layout");
    run(config
        .command("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(&remote)
        .arg(format!("oci:{}:v1", layout.display())));
    let index = read_json(&layout.join("index.json"));
    let copied = &index["manifests"][0];
    assert_eq!(
        copied["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    assert_eq!(
        copied["digest"],
        served_digest.as_str(),
        "the copied-out manifest is the one kiln serves: {index}"
    );
    let blob_path = |digest: &str| layout.join("blobs").join(digest.replacen(':', "/", 1));
    let copied_manifest = std::fs::read(blob_path(&served_digest)).expect("manifest in layout");
    assert_eq!(copied_manifest, served);
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    for digest in layers.iter().map(String::as_str).chain([config_digest]) {
        let copied = std::fs::read(blob_path(digest))
            .unwrap_or_else(|e| panic!("blob {digest} in the copied-out layout: {e}"));
        assert_eq!(sha256_digest(&copied), digest, "copied-out blob");
        assert_eq!(
            copied,
            kiln.blob("clients/skopeo", digest).await,
            "copied-out blob {digest} is the one kiln serves"
        );
    }
    let (image_id, _) = image.id_and_diff_ids();
    assert_eq!(
        config_digest,
        format!("sha256:{image_id}"),
        "the local image's config went through unchanged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn buildah_pushes_and_pulls_back_the_same_image() {
    let app = TestApp::start().await;
    let kiln = Kiln::new(&app);
    let config = ClientConfig::new();
    let image = TinyImage::build(&[
        ("/hello.txt", "hello from buildah\n"),
        ("/second.txt", "another layer\n"),
    ]);
    let (image_id, diff_ids) = image.id_and_diff_ids();
    let remote_name = kiln.reference("clients/buildah", "v1");
    let remote = format!("docker://{remote_name}");
    let work = tempfile::tempdir().expect("temp dir");
    let digest_file = work.path().join("pushed.digest");

    run(config
        .command("buildah")
        .args(["push", "--tls-verify=false", "--creds"])
        .arg(pusher_creds())
        .arg("--digestfile")
        .arg(&digest_file)
        .arg(&image.name)
        .arg(&remote));
    let served_digest = kiln.head_digest("clients/buildah", "v1").await;
    let pushed_digest = std::fs::read_to_string(&digest_file).expect("buildah wrote --digestfile");
    assert_eq!(
        pushed_digest.trim(),
        served_digest,
        "buildah's --digestfile"
    );
    let manifest: Value =
        serde_json::from_slice(&kiln.manifest("clients/buildah", "v1").await).expect("JSON");
    assert_eq!(
        manifest["config"]["digest"],
        format!("sha256:{image_id}").as_str(),
        "kiln holds the pushed image's config"
    );

    // Forget the local image so the pull really comes from kiln, then pull it anonymously.
    drop(image);
    let pulled = PulledImage(remote_name.clone());
    run(config
        .command("buildah")
        .args(["pull", "--quiet", "--tls-verify=false"])
        .arg(&remote));
    let (pulled_id, pulled_diff_ids) = image_id_and_diff_ids(&pulled.0);
    assert_eq!(
        pulled_id, image_id,
        "the pulled image has the pushed config"
    );
    assert_eq!(
        pulled_diff_ids, diff_ids,
        "the pulled image has the pushed layers"
    );

    // Its files read back as written.
    let container = stdout_text(&run(Command::new("buildah").args(["from", &pulled.0])));
    let mount = Command::new("buildah").args(["mount", &container]).output();
    let content = mount.as_ref().ok().map(|m| {
        let root = PathBuf::from(String::from_utf8_lossy(&m.stdout).trim());
        (
            std::fs::read_to_string(root.join("hello.txt")),
            std::fs::read_to_string(root.join("second.txt")),
        )
    });
    let _ = Command::new("buildah")
        .args(["umount", &container])
        .output();
    let _ = Command::new("buildah").args(["rm", &container]).output();
    let (hello, second) = content.expect("buildah mount runs");
    assert_eq!(
        hello.expect("/hello.txt in the pulled image"),
        "hello from buildah\n"
    );
    assert_eq!(
        second.expect("/second.txt in the pulled image"),
        "another layer\n"
    );
}

/// An image pulled into local containers-storage; removed on drop.
struct PulledImage(String);

impl Drop for PulledImage {
    fn drop(&mut self) {
        remove_image(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crane_copies_across_repositories_and_agrees_on_digests() {
    let app = TestApp::start().await;
    let kiln = Kiln::new(&app);
    let config = ClientConfig::new();
    let work = tempfile::tempdir().expect("temp dir");

    run(config.crane().args([
        "auth",
        "login",
        &kiln.host(),
        "-u",
        PUSHER.0,
        "-p",
        PUSHER.1,
    ]));

    // Two single-file layer tarballs, appended to crane's empty base image.
    let mut layers = Vec::new();
    for (file, content) in [("hello.txt", "hello from crane\n"), ("b.txt", "bee\n")] {
        std::fs::write(work.path().join(file), content).expect("write layer file");
        let tar = work.path().join(format!("{file}.tar"));
        run(Command::new("tar")
            .arg("-C")
            .arg(work.path())
            .arg("-cf")
            .arg(&tar)
            .arg(file));
        layers.push(tar);
    }
    let source = kiln.reference("clients/crane-source", "v1");
    let mut append = config.crane();
    append.args(["append", "--insecure", "-t", &source]);
    for layer in &layers {
        append.arg("-f").arg(layer);
    }
    let appended = stdout_text(&run(&mut append));
    let source_digest = kiln.head_digest("clients/crane-source", "v1").await;
    assert_eq!(
        appended,
        format!("{}/clients/crane-source@{source_digest}", kiln.host()),
        "crane append prints the digest kiln serves"
    );

    // Copy to another repository of the same registry: crane mounts the blobs.
    let target = kiln.reference("clients/crane-target", "v1");
    let copy = run(config
        .crane()
        .args(["copy", "--insecure", &source, &target]));
    let copy_log = String::from_utf8_lossy(&copy.stderr);
    let manifest_bytes = kiln.manifest("clients/crane-target", "v1").await;
    let manifest: Value = serde_json::from_slice(&manifest_bytes).expect("manifest JSON");
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let blobs: Vec<String> = layer_digests(&manifest)
        .into_iter()
        .chain([config_digest.to_owned()])
        .collect();
    assert_eq!(blobs.len(), 3, "two layers and a config: {manifest}");
    for digest in &blobs {
        assert!(
            copy_log.contains(&format!("mounted blob: {digest}")),
            "crane copy mounted {digest} from clients/crane-source:\n{copy_log}"
        );
        assert_eq!(
            kiln.blob("clients/crane-target", digest).await,
            kiln.blob("clients/crane-source", digest).await,
            "blob {digest} in both repositories"
        );
    }

    let target_digest = kiln.head_digest("clients/crane-target", "v1").await;
    assert_eq!(
        target_digest, source_digest,
        "the copy is the same manifest"
    );
    assert_eq!(sha256_digest(&manifest_bytes), target_digest);
    for repo in ["clients/crane-source", "clients/crane-target"] {
        let reference = kiln.reference(repo, "v1");
        let digest = run(config.crane().args(["digest", "--insecure", &reference]));
        assert_eq!(
            stdout_text(&digest),
            target_digest,
            "crane digest {reference}"
        );
        let fetched = run(config.crane().args(["manifest", "--insecure", &reference]));
        assert_eq!(
            fetched.stdout, manifest_bytes,
            "crane manifest {reference} gives the bytes kiln serves"
        );
        let repository = format!("{}/{repo}", kiln.host());
        let tags = run(config.crane().args(["ls", "--insecure", &repository]));
        assert_eq!(stdout_text(&tags), "v1", "crane ls {repo}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oras_pushes_and_pulls_an_artifact_with_a_custom_config() {
    let app = TestApp::start().await;
    let kiln = Kiln::new(&app);
    let config = ClientConfig::new();
    let work = tempfile::tempdir().expect("temp dir");
    let file_content = "an artifact layer, pushed by oras\n";
    let config_content = r#"{"kiln":"client test"}"#;
    std::fs::write(work.path().join("file.txt"), file_content).expect("write file.txt");
    std::fs::write(work.path().join("config.json"), config_content).expect("write config");
    let reference = kiln.reference("clients/oras", "v1");

    run(config.oras().current_dir(work.path()).args([
        "push",
        "--plain-http",
        "-u",
        PUSHER.0,
        "-p",
        PUSHER.1,
        &reference,
        "--artifact-type",
        "application/vnd.kiln.test",
        "--config",
        "config.json:application/vnd.kiln.test.config.v1+json",
        "file.txt:text/plain",
    ]));

    let pulled = work.path().join("pulled");
    run(config
        .oras()
        .args(["pull", "--plain-http", "-o"])
        .arg(&pulled)
        .arg(&reference));
    assert_eq!(
        std::fs::read_to_string(pulled.join("file.txt")).expect("oras pulled file.txt"),
        file_content,
        "oras pull gives back the pushed file"
    );

    let fetched = run(config
        .oras()
        .args(["manifest", "fetch", "--plain-http", &reference]));
    let served = kiln.manifest("clients/oras", "v1").await;
    assert_eq!(
        fetched.stdout, served,
        "oras manifest fetch gives the bytes kiln serves"
    );
    assert_eq!(
        sha256_digest(&served),
        kiln.head_digest("clients/oras", "v1").await
    );
    let manifest: Value = serde_json::from_slice(&served).expect("manifest JSON");
    assert_eq!(manifest["artifactType"], "application/vnd.kiln.test");
    assert_eq!(
        manifest["config"]["mediaType"], "application/vnd.kiln.test.config.v1+json",
        "the custom config media type survives: {manifest}"
    );
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    assert_eq!(
        kiln.blob("clients/oras", config_digest).await,
        config_content.as_bytes(),
        "kiln serves the pushed config blob"
    );
    let layer = &manifest["layers"][0];
    assert_eq!(layer["mediaType"], "text/plain");
    assert_eq!(
        layer["annotations"]["org.opencontainers.image.title"],
        "file.txt"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pushing_without_credentials_is_refused() {
    let app = TestApp::start().await;
    let kiln = Kiln::new(&app);
    let config = ClientConfig::new();
    let work = tempfile::tempdir().expect("temp dir");
    std::fs::write(work.path().join("file.txt"), "not welcome\n").expect("write file.txt");

    let stderr = run_refused(config.oras().current_dir(work.path()).args([
        "push",
        "--plain-http",
        &kiln.reference("clients/anonymous", "v1"),
        "file.txt:text/plain",
    ]));
    assert!(
        stderr.contains("credential") || stderr.contains("401") || stderr.contains("unauthorized"),
        "oras says why the push failed:\n{stderr}"
    );

    let stderr = run_refused(config.oras().current_dir(work.path()).args([
        "push",
        "--plain-http",
        "-u",
        PUSHER.0,
        "-p",
        "wrong-password",
        &kiln.reference("clients/anonymous", "v2"),
        "file.txt:text/plain",
    ]));
    assert!(
        stderr.contains("401") || stderr.contains("unauthorized"),
        "oras says why the push failed:\n{stderr}"
    );

    // containers/image: skopeo without --dest-creds.
    let image = TinyImage::build(&[("/hello.txt", "not welcome either\n")]);
    let stderr = run_refused(
        config
            .command("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("containers-storage:{}", image.name))
            .arg(format!(
                "docker://{}",
                kiln.reference("clients/anonymous", "v3")
            )),
    );
    assert!(
        stderr.contains("unauthorized"),
        "skopeo says why the push failed:\n{stderr}"
    );

    for tag in ["v1", "v2", "v3"] {
        assert_eq!(
            kiln.head_status("clients/anonymous", tag).await,
            404,
            "a refused push leaves no clients/anonymous:{tag}"
        );
    }
}
