//! The same image on every kiln: two kilns on different ports and data directories, each
//! reading the local test channel through its own mirror URL and PyPI through a different index
//! (real PyPI, and a local mirror of it), build the same conda + pip request for linux/amd64 and
//! linux/arm64 into the same index and manifests, byte for byte, and the same request as a SIF
//! into the same file. No label, file kiln wrote or SIF metadata names either kiln, its data
//! directory or the mirrors the packages came through.

use crate::support::{conda_channel, debian_base, native_build};

use std::io::Read as _;

use crate::support::TestApp;
use conda_channel::{CHANNEL_NAME, CondaChannel};
use debian_base::push_debian_python_base;
use kiln::build::native::NativeBuilder;
use kiln::store::{BuildOutcome, ImageOutput};
use native_build::{BASE_REPOSITORY, build, build_format, builder, pusher};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// A conda package with a dependency, and a wheel from the pip index, for both platforms.
const ENTRIES: [&str; 2] = ["kiln-hello", "pip:idna==3.10"];
const PLATFORMS: [&str; 2] = ["linux/amd64", "linux/arm64"];

/// One kiln: its app (registry), the builder with its own data directory, and everything of it
/// that must not appear in an image.
struct Kiln {
    app: TestApp,
    builder: NativeBuilder,
    _data: tempfile::TempDir,
    _channel: conda_channel::ChannelServer,
    own: Vec<String>,
}

impl Kiln {
    /// A kiln reading the test channel from its own server of `channel`, and pip packages from
    /// `pip_index` (PyPI when `None`).
    async fn start(channel: &CondaChannel, pip_index: Option<&str>) -> Kiln {
        let app = TestApp::start().await;
        push_debian_python_base(&pusher(&app), BASE_REPOSITORY).await;
        let served = channel.serve();
        let data = tempfile::tempdir().expect("temp dir");
        let mut builder = builder(&app, &served.url, data.path()).await;
        builder.pip.index_url = pip_index.map(str::to_owned);
        let mut own = vec![
            app.address.to_string(),
            served.url.clone(),
            host_port(&served.url),
            data.path().display().to_string(),
        ];
        own.extend(pip_index.map(host_port));
        Kiln {
            app,
            builder,
            _data: data,
            _channel: served,
            own,
        }
    }
}

/// `127.0.0.1:PORT` of `http://127.0.0.1:PORT/…`.
fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .expect("a host")
        .to_owned()
}

fn succeeded(outcome: BuildOutcome, log: &str) -> (String, Vec<ImageOutput>) {
    match outcome {
        BuildOutcome::Succeeded {
            digest, outputs, ..
        } => (digest, outputs),
        other => panic!("the build failed: {other:?}\n{log}"),
    }
}

/// GETs `path` from `app`'s registry (anonymous pulls are allowed).
async fn get(app: &TestApp, path: &str) -> Vec<u8> {
    let response = reqwest::Client::new()
        .get(app.url(path))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200, "{path}");
    response.bytes().await.expect("body").to_vec()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// Fails if `text` (named `what`) holds any of `forbidden`.
fn assert_free_of(what: &str, text: &str, forbidden: &[String]) {
    for needle in forbidden {
        assert!(
            !text.contains(needle.as_str()),
            "{what} names `{needle}`, which belongs to one kiln"
        );
    }
}

/// Checks the image `manifest_digest` in `repository`: its labels name the base without a
/// host and the packages by their canonical URLs, and neither they nor kiln's layers hold any
/// of `forbidden`.
async fn check_image(
    app: &TestApp,
    repository: &str,
    manifest_digest: &str,
    subdir: &str,
    forbidden: &[String],
) {
    let manifest = json(
        &get(
            app,
            &format!("/v2/{repository}/manifests/{manifest_digest}"),
        )
        .await,
    );
    let config_digest = manifest["config"]["digest"].as_str().expect("config");
    let config = json(&get(app, &format!("/v2/{repository}/blobs/{config_digest}")).await);
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        manifest["layers"].as_array().map(Vec::len),
        "one diff_id per layer"
    );
    let labels = config["config"]["Labels"].as_object().expect("labels");
    assert_eq!(
        labels["org.opencontainers.image.base.name"],
        format!("{BASE_REPOSITORY}:bookworm")
    );
    let base_digest = labels["org.opencontainers.image.base.digest"]
        .as_str()
        .expect("the base digest");
    let lock = labels["io.kiln.lock"].as_str().expect("the lock");
    let canonical = format!("https://conda.anaconda.org/{CHANNEL_NAME}/{subdir}/");
    assert!(
        lock.contains(&format!("{canonical}kiln-hello-2.0-h0_0.conda#")),
        "the lock names the package by its channel's canonical URL: {lock}"
    );
    assert!(
        lock.contains("\nidna==3.10 --hash=sha256:"),
        "the lock names the wheel by version and hash, not by index: {lock}"
    );
    for (name, value) in labels {
        let value = value.as_str().expect("a string label");
        assert!(
            !value.contains("127.0.0.1"),
            "label {name} names a local address: {value}"
        );
        assert_free_of(&format!("label {name}"), value, forbidden);
    }

    // kiln's layers (those the base does not have), unpacked: no file kiln wrote (conda-meta
    // records above all) names a kiln or a mirror.
    let base = json(
        &get(
            app,
            &format!("/v2/{BASE_REPOSITORY}/manifests/{base_digest}"),
        )
        .await,
    );
    let base_layers: Vec<&Value> = base["layers"].as_array().expect("layers").iter().collect();
    let mut checked = 0;
    for layer in manifest["layers"].as_array().expect("layers") {
        if base_layers.iter().any(|b| b["digest"] == layer["digest"]) {
            continue;
        }
        let digest = layer["digest"].as_str().expect("digest");
        let compressed = get(app, &format!("/v2/{repository}/blobs/{digest}")).await;
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(compressed.as_slice())
            .read_to_end(&mut tar)
            .expect("a gzip layer");
        assert_free_of(
            &format!("layer {digest}"),
            &String::from_utf8_lossy(&tar),
            forbidden,
        );
        checked += 1;
    }
    assert!(checked > 1, "kiln added its layers: {manifest}");
}

/// The repository of `host/repository:tag`.
fn repository_of(image: &str) -> &str {
    image
        .trim_start_matches("oras://")
        .split_once('/')
        .and_then(|(_, rest)| rest.rsplit_once(':'))
        .map(|(repository, _)| repository)
        .expect("host/repository:tag")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_kilns_make_the_same_images_and_sifs() {
    let channel = CondaChannel::build();
    let pypi = pypi_mirror::serve("idna", "3.10").await;
    let a = Kiln::start(&channel, None).await;
    let b = Kiln::start(&channel, Some(&pypi.url)).await;
    let forbidden: Vec<String> = a.own.iter().chain(&b.own).cloned().collect();

    // OCI: the same index and the same manifest for each platform. (Both kilns build at once,
    // as separate kilns would.)
    let ((index_a, image_a, log_a), (index_b, _, log_b)) = tokio::join!(
        build(&a.builder, &a.app, &ENTRIES, &PLATFORMS, ""),
        build(&b.builder, &b.app, &ENTRIES, &PLATFORMS, ""),
    );
    let (digest_a, outputs_a) = succeeded(index_a, &log_a);
    let (digest_b, outputs_b) = succeeded(index_b, &log_b);
    assert_eq!(outputs_a.len(), 2, "{log_a}");
    assert_eq!(digest_a, digest_b, "the same index on both kilns");
    assert_eq!(outputs_a, outputs_b, "the same manifests on both kilns");
    let repository = repository_of(&image_a);
    for (output, subdir) in outputs_a.iter().zip(["linux-64", "linux-aarch64"]) {
        check_image(&a.app, repository, &output.digest, subdir, &forbidden).await;
    }

    // SIF: the same file, whose metadata outside the squashfs (definition, labels, inspect
    // data, OCI config) names neither kiln.
    let (sif_a, sif_b) = tokio::join!(sif_sha256(&a, &forbidden), sif_sha256(&b, &forbidden));
    // (The ORAS manifests around the file differ: their title annotation is the file name,
    // which has the tag, whose key hashes the kiln's registry.)
    assert_eq!(sif_a, sif_b, "the same SIF on both kilns");
}

/// Builds the request as a linux/amd64 SIF on `kiln`, checks that the file holds none of
/// `forbidden` outside its (compressed) squashfs, and returns its sha256.
async fn sif_sha256(kiln: &Kiln, forbidden: &[String]) -> String {
    let (outcome, image, log) = build_format(
        &kiln.builder,
        &kiln.app,
        &ENTRIES,
        &["linux/amd64"],
        "sif",
        "",
    )
    .await;
    let (_, outputs) = succeeded(outcome, &log);
    let url = outputs[0].download_url.clone().expect("a download link");
    let bytes = reqwest::get(&url)
        .await
        .expect("download")
        .bytes()
        .await
        .expect("SIF bytes");
    let sha256 = hex::encode(Sha256::digest(&bytes));
    assert!(url.contains(&sha256), "{url}");
    assert_free_of(
        &format!("the SIF {image}"),
        &String::from_utf8_lossy(&bytes),
        forbidden,
    );
    sha256
}

/// A site's PyPI mirror on 127.0.0.1: a PEP 503 simple index serving one release's wheel,
/// downloaded from PyPI and checked against PyPI's sha256.
mod pypi_mirror {
    use axum::http::{StatusCode, Uri, header};
    use axum::response::IntoResponse as _;
    use serde_json::Value;
    use sha2::{Digest as _, Sha256};

    pub struct Served {
        /// The index URL, `http://127.0.0.1:PORT/simple`.
        pub url: String,
        server: tokio::task::JoinHandle<()>,
    }

    impl Drop for Served {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    pub async fn serve(project: &str, version: &str) -> Served {
        let listing: Value = reqwest::Client::new()
            .get(format!("https://pypi.org/simple/{project}/"))
            .header(header::ACCEPT, "application/vnd.pypi.simple.v1+json")
            .send()
            .await
            .expect("PyPI answers")
            .json()
            .await
            .expect("the project's files as JSON (PEP 691)");
        let wheel = listing["files"]
            .as_array()
            .expect("files")
            .iter()
            .find(|file| {
                file["filename"].as_str().is_some_and(|name| {
                    name.starts_with(&format!("{project}-{version}-")) && name.ends_with(".whl")
                })
            })
            .expect("a wheel of the release")
            .clone();
        let file_name = wheel["filename"].as_str().expect("file name").to_owned();
        let sha256 = wheel["hashes"]["sha256"]
            .as_str()
            .expect("sha256")
            .to_owned();
        let bytes = reqwest::get(wheel["url"].as_str().expect("url"))
            .await
            .expect("the wheel downloads")
            .bytes()
            .await
            .expect("wheel bytes");
        assert_eq!(hex::encode(Sha256::digest(&bytes)), sha256);

        let page = format!(
            "<!DOCTYPE html><html><body><a href=\"../../files/{file_name}#sha256={sha256}\">{file_name}</a></body></html>"
        );
        let (project_path, file_path) =
            (format!("/simple/{project}/"), format!("/files/{file_name}"));
        let router = axum::Router::new().fallback(move |uri: Uri| {
            let (page, bytes) = (page.clone(), bytes.clone());
            let (project_path, file_path) = (project_path.clone(), file_path.clone());
            async move {
                if uri.path() == project_path {
                    ([(header::CONTENT_TYPE, "text/html")], page).into_response()
                } else if uri.path() == file_path {
                    bytes.into_response()
                } else {
                    StatusCode::NOT_FOUND.into_response()
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the index serves");
        });
        Served {
            url: format!("http://{address}/simple"),
            server,
        }
    }
}
