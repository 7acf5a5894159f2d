//! A fresh kiln as a new user starts it: default settings, an empty data directory, nothing
//! pushed, and no mmdebstrap or qemu on its PATH. Its first conda request (amd64 and arm64)
//! and first pip-only request make kiln's own bases from Debian's packages on the way, and
//! the images run.

use crate::support::{conda_channel, debian_mirror, run_image};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conda_channel::{CHANNEL_NAME, CondaChannel};
use debian_mirror::{DebianMirror, SUITE};
use serde_json::{Value, json};

/// `kiln serve` as a child process with a chosen PATH; stopped on drop.
struct Kiln {
    child: Child,
    url: String,
    address: String,
    data: tempfile::TempDir,
}

impl Kiln {
    /// Starts kiln with only `settings` (TOML) beyond its listen address and data directory.
    async fn start(settings: &str, path: &str) -> Kiln {
        let data = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = data.path().join("kiln.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{address}\"\nregistry = \"{address}\"\ndata_dir = \"{}\"\n{settings}",
                data.path().join("data").display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(data.path().join("kiln.log")).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .arg("serve")
            .env_clear()
            .env("KILN_CONFIG", &config)
            .env("PATH", path)
            .stdout(Stdio::null())
            .stderr(log);
        // The host's trust store (a TLS-intercepting proxy's CA here), for PyPI.
        for var in [
            "HOME",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "REQUESTS_CA_BUNDLE",
        ] {
            if let Some(value) = std::env::var_os(var) {
                command.env(var, value);
            }
        }
        let child = command.spawn().expect("kiln serve starts");
        let kiln = Kiln {
            child,
            url: format!("http://{address}"),
            address,
            data,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::get(format!("{}/health", kiln.url)).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "kiln did not start:\n{}",
                kiln.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        kiln
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("kiln.log")).unwrap_or_default()
    }

    /// `POST /api/v1/images`, then polls the build until it is done; the record and its log.
    async fn build(&self, body: Value) -> (Value, String) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/images", self.url))
            .json(&body)
            .send()
            .await
            .expect("POST");
        let answer: Value = response.json().await.expect("JSON");
        let id = answer["build"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no build in {answer}"))
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let record: Value = reqwest::get(format!("{}/api/v1/builds/{id}", self.url))
                .await
                .expect("GET")
                .json()
                .await
                .expect("JSON");
            if record["status"] == "DONE" {
                let log = reqwest::get(format!("{}/api/v1/builds/{id}/log", self.url))
                    .await
                    .expect("GET log")
                    .text()
                    .await
                    .expect("log");
                return (record, log);
            }
            assert!(
                Instant::now() < deadline,
                "build {id} not done:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Kiln {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory of links to every program on this process's PATH but mmdebstrap and qemu-*,
/// and its path: what kiln may use.
fn path_without_bootstrap_tools(dir: &Path) -> String {
    let path = std::env::var("PATH").expect("PATH");
    for entry in std::env::split_paths(&path)
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .flatten()
    {
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if text.starts_with("mmdebstrap") || text.starts_with("qemu-") {
            continue;
        }
        let link: PathBuf = dir.join(&name);
        if !link.exists() {
            let _ = std::os::unix::fs::symlink(entry.path(), link);
        }
    }
    dir.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_kiln_makes_its_bases_and_its_first_images_run() {
    let bin = tempfile::tempdir().expect("temp dir");
    let path = path_without_bootstrap_tools(bin.path());
    assert!(
        !bin.path().join("mmdebstrap").exists() && !bin.path().join("qemu-aarch64-static").exists()
    );
    let channel = CondaChannel::build();
    let server = channel.serve();
    let kiln = Kiln::start(
        &format!("[channel_mirrors]\n{CHANNEL_NAME} = \"{}\"\n", server.url),
        &path,
    )
    .await;

    let started = Instant::now();
    let (record, log) = kiln
        .build(json!({
            "packages": ["kiln-hello=2.0"],
            "channels": [CHANNEL_NAME],
            "platforms": ["linux/amd64", "linux/arm64"],
        }))
        .await;
    println!(
        "first conda image (both bases made) in {:.1} s\n{log}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(record["succeeded"], json!(true), "{record}\n{log}");
    assert!(
        log.contains("made kiln's base") && log.contains("kiln/base/debian:bookworm"),
        "the log says the base was made: {log}"
    );
    let image = record["image"].as_str().expect("image").to_owned();
    for platform in ["linux/amd64", "linux/arm64"] {
        let output = run_image::run_in_image(&image, platform, &["kiln-hello"]);
        assert!(output.contains("hello"), "{platform}: {output}");
    }

    let (record, log) = kiln.build(json!({"packages": ["pip:cowsay==6.1"]})).await;
    assert_eq!(record["succeeded"], json!(true), "{record}\n{log}");
    assert!(
        log.contains("kiln/base/debian-python:bookworm"),
        "the pip-only request builds on kiln's Python base: {log}"
    );
    let image = record["image"].as_str().expect("image").to_owned();
    let output = run_image::run_in_image(&image, "linux/amd64", &["cowsay", "-t", "kiln"]);
    assert!(output.contains("kiln"), "{output}");
    assert!(kiln.address.starts_with("127.0.0.1:"));
}

/// A site's own Debian mirror, signed with its own key given as `base.debian_keyring`, serves
/// a `Packages` index altered after signing: the first build fails, naming that file, and no
/// base is pushed.
#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_mirror_index_fails_the_first_build_naming_the_file() {
    let archive = DebianMirror::build();
    // Both platforms' indexes: kiln makes a base's platforms side by side and reports the
    // first to fail, and either must fail for its tampered file, not for something else.
    let tampered: Vec<String> = ["amd64", "arm64"]
        .iter()
        .map(|arch| format!("dists/{SUITE}/main/binary-{arch}/Packages.xz"))
        .collect();
    for file in &tampered {
        archive.tamper(file);
    }
    let mirror = archive.serve();
    let channel = CondaChannel::build();
    let server = channel.serve();
    let kiln = Kiln::start(
        &format!(
            "[base]\ndebian_mirror = \"{}\"\ndebian_suite = \"{SUITE}\"\ndebian_keyring = \"{}\"\n\n\
             [channel_mirrors]\n{CHANNEL_NAME} = \"{}\"\n",
            mirror.url,
            archive.keyring.display(),
            server.url
        ),
        &std::env::var("PATH").expect("PATH"),
    )
    .await;
    let (record, log) = kiln
        .build(json!({"packages": ["kiln-hello=2.0"], "channels": [CHANNEL_NAME]}))
        .await;
    assert_eq!(record["succeeded"], json!(false), "{record}");
    let reason = record["reason"].as_str().expect("a reason");
    assert!(
        tampered.iter().any(|file| reason.contains(file.as_str()))
            && reason.contains("kiln/base/debian:kiln"),
        "the reason names the base and the file: {reason}\n{log}"
    );
    let tag = reqwest::get(format!(
        "{}/v2/kiln/base/debian/manifests/{SUITE}",
        kiln.url
    ))
    .await
    .expect("GET");
    assert_ne!(tag.status(), 200, "no base was pushed");
}
