//! A tiny base image for the benchmarks that build conda environments: one layer with
//! `etc/os-release`, its config and manifest, and an index for linux/amd64, the shape
//! `kiln base bootstrap` gives bases. Nothing runs in it: the native builder only stacks its
//! layers under the environment's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use bytes::Bytes;
use kiln::assemble::{self, BaseConfig};
use kiln::registry::client::RegistryClient;
use kiln::spec::Platform;

/// Pushes the base as `repository:tag` with `client`, which must be allowed to push.
pub async fn push_base(client: &RegistryClient, repository: &str, tag: &str) -> Result<()> {
    let root = tempfile::tempdir()?;
    std::fs::create_dir(root.path().join("etc"))?;
    std::fs::write(root.path().join("etc/os-release"), "ID=kiln-bench\n")?;
    let layer_dir = tempfile::tempdir()?;
    let paths = [PathBuf::from("etc"), PathBuf::from("etc/os-release")];
    let layer = assemble::write_fragment(root.path(), &paths, layer_dir.path())?;
    client
        .push_blob_file(repository, &layer.digest, &layer.gz_path, None)
        .await?;
    let env = [(
        "PATH".to_owned(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
    )];
    let config = assemble::image_config(
        Platform::LinuxAmd64,
        &BaseConfig::default(),
        std::slice::from_ref(&layer.diff_id),
        &env,
        &BTreeMap::new(),
    );
    client
        .push_blob_bytes(repository, Bytes::from(config.bytes.clone()), None)
        .await?;
    let manifest = assemble::image_manifest(&config, &[layer.descriptor()], &BTreeMap::new());
    client
        .push_manifest(
            repository,
            &manifest.digest,
            Bytes::from(manifest.bytes.clone()),
            manifest.media_type,
        )
        .await?;
    let index = assemble::image_index(&[(Platform::LinuxAmd64, manifest)]);
    client
        .push_manifest(repository, tag, Bytes::from(index.bytes), index.media_type)
        .await?;
    Ok(())
}
