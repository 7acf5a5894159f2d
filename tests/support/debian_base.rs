//! kiln's Debian test base (bookworm with python3 and pip, amd64 and arm64), made from Debian's
//! packages with `kiln::base::debian::create` once per `target/` and replayed from a saved copy
//! after, so test binaries share one download and one assembly.

use std::path::PathBuf;

use bytes::Bytes;
use kiln::assemble::{MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use kiln::base::debian::keyring::Keyring;
use kiln::base::debian::mirror::Mirror;
use kiln::base::debian::{DebianBase, create, http_client};
use kiln::registry::client::RegistryClient;
use kiln::spec::Platform;

/// The tag every copy of the base is pushed under.
pub const DEBIAN_TAG: &str = "bookworm";

/// One creation at a time in a test binary; the others wait and replay its copy.
static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Debian's archive, read through kiln's mirror reader with its embedded keys; indexes and
/// `.deb`s are cached under `target/` for every test binary.
pub fn debian_mirror() -> Mirror {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    Mirror::new(
        http_client().expect("HTTP client"),
        "http://deb.debian.org/debian".parse().expect("URL"),
        DEBIAN_TAG,
        Keyring::debian(),
        tmp.join("kiln-debian-cache"),
    )
}

/// Makes `repository:bookworm` in `client`'s registry the Debian base with python3 and pip.
pub async fn push_debian_python_base(client: &RegistryClient, repository: &str) {
    let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-debian-python-native");
    let _guard = CREATING.lock().await;
    if !saved.join("index.json").is_file() {
        let work = tempfile::tempdir().expect("temp dir");
        let base = create(
            &DebianBase {
                repository: repository.to_owned(),
                tag: DEBIAN_TAG.to_owned(),
                packages: vec!["python3".into(), "python3-pip".into()],
                platforms: vec![Platform::LinuxAmd64, Platform::LinuxArm64],
            },
            &debian_mirror(),
            client,
            work.path(),
            |line| println!("base: {line}"),
        )
        .await
        .expect("the Debian base is made");
        assert_eq!(base.glibc, "2.36");
        save(client, repository, &saved).await;
        return;
    }
    replay(client, repository, &saved).await;
}

/// Copies the index, its manifests and their blobs from the registry into `dir`.
pub async fn save(client: &RegistryClient, repository: &str, dir: &std::path::Path) {
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(partial.join("blobs")).expect("cache dir");
    let (index, _) = client
        .pull_manifest(repository, DEBIAN_TAG, &[MEDIA_TYPE_INDEX])
        .await
        .expect("index");
    for manifest_digest in digests(&index, "manifests") {
        let (manifest, _) = client
            .pull_manifest(repository, &manifest_digest, &[MEDIA_TYPE_MANIFEST])
            .await
            .expect("manifest");
        let value: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
        let config = value["config"]["digest"]
            .as_str()
            .expect("config")
            .to_owned();
        for blob in std::iter::once(config).chain(digests(&manifest, "layers")) {
            let file = tokio::fs::File::create(partial.join("blobs").join(&blob))
                .await
                .expect("blob file");
            client
                .pull_blob(repository, &blob, file)
                .await
                .expect("blob");
        }
        std::fs::write(partial.join(&manifest_digest), &manifest).expect("manifest file");
    }
    std::fs::write(partial.join("index.json"), &index).expect("index file");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&partial, dir).expect("cache in place");
}

/// Pushes a copy saved by [`save`] into `repository`.
pub async fn replay(client: &RegistryClient, repository: &str, dir: &std::path::Path) {
    let index = std::fs::read(dir.join("index.json")).expect("saved index");
    for manifest_digest in digests(&index, "manifests") {
        let manifest = std::fs::read(dir.join(&manifest_digest)).expect("saved manifest");
        let value: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
        let config = value["config"]["digest"]
            .as_str()
            .expect("config")
            .to_owned();
        for blob in std::iter::once(config).chain(digests(&manifest, "layers")) {
            client
                .push_blob_file(repository, &blob, &dir.join("blobs").join(&blob), None)
                .await
                .expect("blob pushed");
        }
        client
            .push_manifest(
                repository,
                &manifest_digest,
                Bytes::from(manifest),
                MEDIA_TYPE_MANIFEST,
            )
            .await
            .expect("manifest pushed");
    }
    client
        .push_manifest(repository, DEBIAN_TAG, Bytes::from(index), MEDIA_TYPE_INDEX)
        .await
        .expect("index pushed");
}

/// The digests listed under `key` (`manifests`, `layers`) of an OCI document.
fn digests(document: &[u8], key: &str) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_slice(document).expect("json");
    value[key]
        .as_array()
        .expect("a list")
        .iter()
        .map(|entry| entry["digest"].as_str().expect("digest").to_owned())
        .collect()
}
