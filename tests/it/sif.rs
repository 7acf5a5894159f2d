//! Singularity images end to end: kiln builds SIFs natively from a local-channel conda request
//! and from a PyPI request, for linux/amd64 and linux/arm64; siftool reads them; the squashfs
//! holds the environment and `/.singularity.d`; the environment runs from the extracted root
//! file system under `chroot` (arm64 through qemu-user binfmt); `oras pull` and `curl` of the
//! download link give the same bytes; `kiln build --output` writes the same file. (Two kilns
//! with their own data directories give the same SIF: tests/it/reproducible.rs.)

use crate::support::{conda_channel, debian_base, go_tools, native_build};

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{PUSHER, TestApp};
use conda_channel::{CHANNEL_NAME, CondaChannel};
use debian_base::push_debian_python_base;
use go_tools::tool;
use kiln::store::{BuildOutcome, ImageOutput};
use native_build::{BASE_REPOSITORY, build_format, builder, pusher};
use sha2::{Digest as _, Sha256};

/// Runs `command` and returns its stdout; fails with its output otherwise.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?} could not start: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read file")))
}

fn output_of(outcome: BuildOutcome, log: &str) -> ImageOutput {
    match outcome {
        BuildOutcome::Succeeded { mut outputs, .. } => {
            assert_eq!(outputs.len(), 1, "a SIF build has one output");
            outputs.remove(0)
        }
        other => panic!("the build failed: {other:?}\n{log}"),
    }
}

/// What a user checks of one built SIF: it downloads the same by `oras pull` and `curl`, siftool
/// reads it, and its root file system runs `command` (after sourcing the environment the image
/// config set) under chroot. Returns the SIF's sha256.
fn check_sif(
    image: &str,
    output: &ImageOutput,
    arch: &str,
    files: &[&str],
    command: &str,
) -> String {
    let work = tempfile::tempdir().expect("temp dir");
    let reference = image.trim_start_matches("oras://");
    run(Command::new(tool("oras"))
        .args(["pull", "--plain-http", "--output"])
        .arg(work.path().join("oras"))
        .arg(reference));
    let pulled: Vec<PathBuf> = std::fs::read_dir(work.path().join("oras"))
        .expect("oras wrote a directory")
        .map(|entry| entry.expect("entry").path())
        .collect();
    let [sif] = pulled.as_slice() else {
        panic!("oras pulled one file, not {pulled:?}");
    };
    assert!(
        sif.to_string_lossy().ends_with(".sif"),
        "the title names a .sif: {}",
        sif.display()
    );
    let url = output.download_url.as_deref().expect("a download link");
    let headers = run(Command::new("curl").args(["-sSfI", url]));
    assert!(
        headers
            .to_lowercase()
            .contains(&format!("content-length: {}", output.size)),
        "{headers}"
    );
    assert!(
        headers.to_lowercase().contains("last-modified:"),
        "{headers}"
    );
    let downloaded = work.path().join("download.sif");
    run(Command::new("curl")
        .args(["-sSf", "-o"])
        .arg(&downloaded)
        .arg(url));
    let sha256 = sha256_file(sif);
    assert_eq!(
        sha256,
        sha256_file(&downloaded),
        "oras and https give the same bytes"
    );
    assert!(
        url.contains(&sha256),
        "the link is content-addressed: {url}"
    );

    let list = run(Command::new(tool("siftool")).arg("list").arg(sif));
    assert!(list.contains("Def.FILE"), "{list}");
    assert!(list.contains("JSON.Generic"), "{list}");
    assert!(
        list.contains(&format!("FS (Squashfs/*System/{arch})")),
        "{list}"
    );
    let partition = list
        .lines()
        .find(|line| line.contains("FS (Squashfs"))
        .and_then(|line| line.split('|').next())
        .map(|id| id.trim().to_owned())
        .expect("a partition row");
    let info = run(Command::new(tool("siftool"))
        .args(["info", &partition])
        .arg(sif));
    let architecture = info
        .lines()
        .find_map(|line| line.trim().strip_prefix("Architecture:"))
        .map(str::trim);
    assert_eq!(architecture, Some(arch), "{info}");
    let squashfs = work.path().join("rootfs.squashfs");
    let dumped = Command::new(tool("siftool"))
        .args(["dump", &partition])
        .arg(sif)
        .output()
        .expect("siftool dump");
    assert!(dumped.status.success());
    std::fs::write(&squashfs, &dumped.stdout).expect("write squashfs");

    let listing = run(Command::new("unsquashfs").arg("-l").arg(&squashfs));
    for file in files.iter().chain(&[
        "/.singularity.d/env/10-docker2singularity.sh",
        "/.singularity.d/runscript",
    ]) {
        assert!(
            listing.contains(&format!("squashfs-root{file}\n")),
            "{file} is not in the squashfs"
        );
    }
    let rootfs = work.path().join("rootfs");
    run(Command::new("unsquashfs")
        .args(["-quiet", "-no-progress", "-d"])
        .arg(&rootfs)
        .arg(&squashfs));
    let env = std::fs::read_to_string(rootfs.join(".singularity.d/env/10-docker2singularity.sh"))
        .expect("env script");
    assert!(env.contains("PATH="), "{env}");
    run(Command::new("chroot")
        .arg(&rootfs)
        .args(["/bin/sh", "-c"])
        .arg(format!(
            ". /.singularity.d/env/10-docker2singularity.sh && {command}"
        )))
    .trim()
    .to_owned()
        + "\n"
        + &sha256
}

/// The calls `singularity pull library://<kiln>/library/default/<name>:<tag>` makes (reference
/// §2.2), in its order: the image record, the OCI redirect (refused: download the file), the
/// version, the file, whose `sha256.<hex>` hash must match.
async fn library_pull(app: &TestApp, image: &str, output: &ImageOutput, sha256: &str) {
    let (name, tag) = image
        .rsplit_once('/')
        .and_then(|(_, last)| last.split_once(':'))
        .expect("name:tag");
    let reference = format!("library/default/{name}:{tag}");
    let record: serde_json::Value =
        reqwest::get(app.url(&format!("/v1/images/{reference}?arch=amd64")))
            .await
            .expect("image record")
            .json()
            .await
            .expect("JSON");
    assert_eq!(
        record["data"]["hash"],
        format!("sha256.{sha256}"),
        "{record}"
    );
    assert_eq!(record["data"]["size"], output.size, "{record}");
    assert_eq!(record["data"]["arch"], "amd64", "{record}");
    let redirect = reqwest::get(app.url(&format!(
        "/v1/oci-redirect?namespace=library/default/{name}&mapped=1&accessTypes=pull"
    )))
    .await
    .expect("oci-redirect");
    assert_eq!(redirect.status(), 404, "kiln serves the file itself");
    let version: serde_json::Value = reqwest::get(app.url("/version"))
        .await
        .expect("version")
        .json()
        .await
        .expect("JSON");
    assert_eq!(version["data"]["apiVersion"], "2.0.0-alpha.2");
    let file = reqwest::get(app.url(&format!("/v1/imagefile/{reference}?arch=amd64")))
        .await
        .expect("image file");
    assert_eq!(file.status(), 200);
    let bytes = file.bytes().await.expect("body");
    assert_eq!(hex::encode(Sha256::digest(&bytes)), sha256);
    let other_arch = reqwest::get(app.url(&format!("/v1/images/{reference}?arch=arm64")))
        .await
        .expect("image record");
    assert_eq!(other_arch.status(), 404);
    let error: serde_json::Value = other_arch.json().await.expect("JSON");
    assert_eq!(error["error"]["code"], 404, "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn conda_sifs_run_on_both_platforms_and_are_served_by_oras_and_https() {
    let app = TestApp::start().await;
    push_debian_python_base(&pusher(&app), BASE_REPOSITORY).await;
    let channel = CondaChannel::build();
    let server = channel.serve();
    let data_a = tempfile::tempdir().expect("temp dir");
    let backend_a = builder(&app, &server.url, data_a.path()).await;

    let mut amd64_sha = String::new();
    for (platform, arch, machine) in [
        ("linux/amd64", "amd64", "x86_64"),
        ("linux/arm64", "arm64", "aarch64"),
    ] {
        let (outcome, image, log) =
            build_format(&backend_a, &app, &["kiln-hello"], &[platform], "sif", "").await;
        println!("{log}");
        assert!(image.starts_with("oras://"), "{image}");
        let output = output_of(outcome, &log);
        let checked = check_sif(
            &image,
            &output,
            arch,
            &["/opt/conda/bin/kiln-hello", "/opt/conda/conda-meta"],
            "kiln-hello",
        );
        let (printed, sha256) = checked.split_once('\n').expect("two lines");
        assert_eq!(printed, format!("hello from kiln-hello 2.0 on {machine}"));
        if arch == "amd64" {
            amd64_sha = sha256.to_owned();
            library_pull(&app, &image, &output, sha256).await;
        }
    }

    // `kiln build --output` writes the SIF too.
    let cli = tempfile::tempdir().expect("temp dir");
    let config_path = cli.path().join("kiln.toml");
    std::fs::write(
        &config_path,
        format!(
            "registry = \"{}\"\ndata_dir = \"{}\"\nchannels = [\"{CHANNEL_NAME}\"]\n\n\
             [channel_mirrors]\n{CHANNEL_NAME} = \"{}\"\n\n[base.conda]\nimage = \"{}/{BASE_REPOSITORY}:bookworm\"\nglibc = \"2.36\"\n\n\
             [build]\npush_user = \"{}\"\npush_password = \"{}\"\n",
            app.address,
            cli.path().join("data").display(),
            server.url,
            app.address,
            PUSHER.0,
            PUSHER.1
        ),
    )
    .expect("write config");
    let file = cli.path().join("hello.sif");
    let built = tokio::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--config")
        .arg(&config_path)
        .args(["build", "--format", "sif", "--output"])
        .arg(&file)
        .arg("kiln-hello")
        .env_clear()
        .output()
        .await
        .expect("kiln build runs");
    assert!(
        built.status.success(),
        "kiln build failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert_eq!(
        sha256_file(&file),
        amd64_sha,
        "--output writes the same SIF"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pip_sifs_run_on_both_platforms() {
    let app = TestApp::start().await;
    push_debian_python_base(&pusher(&app), BASE_REPOSITORY).await;
    let channel = CondaChannel::build();
    let server = channel.serve();
    let data = tempfile::tempdir().expect("temp dir");
    let backend = builder(&app, &server.url, data.path()).await;
    for (platform, arch) in [("linux/amd64", "amd64"), ("linux/arm64", "arm64")] {
        let (outcome, image, log) =
            build_format(&backend, &app, &["pip:idna==3.10"], &[platform], "sif", "").await;
        println!("{log}");
        let output = output_of(outcome, &log);
        let checked = check_sif(
            &image,
            &output,
            arch,
            &["/usr/local/lib/python3.11/dist-packages/idna/__init__.py"],
            "python3 -c 'import idna; print(idna.__version__)'",
        );
        assert!(checked.starts_with("3.10\n"), "{platform}: {checked}");
        let sbom = sbom_of(&app, &image, &output).await;
        assert!(
            sbom.contains("\"pkg:pypi/idna@3.10\""),
            "{platform}: {sbom}"
        );
        assert!(
            sbom.contains("\"pkg:deb/debian/libc6@2.36-")
                && sbom.contains(&format!("?arch={arch}&distro=bookworm\"")),
            "{platform}: {sbom}"
        );
    }
}

/// The SPDX document attached to a SIF's ORAS manifest, found through the referrers API.
async fn sbom_of(app: &TestApp, image: &str, output: &ImageOutput) -> String {
    let repository = image
        .trim_start_matches("oras://")
        .split_once('/')
        .and_then(|(_, rest)| rest.rsplit_once(':'))
        .map(|(repository, _)| repository)
        .expect("host/repository:tag");
    let get = |path: String| async move {
        let response = reqwest::get(app.url(&path)).await.expect("GET");
        assert_eq!(response.status(), 200, "{path}");
        response.text().await.expect("body")
    };
    let referrers: serde_json::Value = serde_json::from_str(
        &get(format!(
            "/v2/{repository}/referrers/{}?artifactType=application/spdx+json",
            output.digest
        ))
        .await,
    )
    .expect("an index");
    let referrer = referrers["manifests"][0]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("the SIF has an SBOM referrer: {referrers}"));
    let manifest: serde_json::Value =
        serde_json::from_str(&get(format!("/v2/{repository}/manifests/{referrer}")).await)
            .expect("a manifest");
    let layer = manifest["layers"][0]["digest"].as_str().expect("one layer");
    get(format!("/v2/{repository}/blobs/{layer}")).await
}
