//! The native builder the pip and SIF benchmarks build with.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use kiln::build::native::NativeBuilder;
use kiln::config::Config;
use kiln::store::Store;

use super::kiln_app::Kiln;

/// A native builder with its caches under `data`, as `kiln serve` lays them out, building
/// pip-only requests on `base`, pushing to `kiln` with the builder credential, recording
/// package layers in `store`.
pub fn native_builder(
    kiln: &Kiln,
    base: &str,
    data: &Path,
    store: Arc<dyn Store>,
) -> Result<NativeBuilder> {
    let mut config = Config {
        registry: kiln.address.to_string().parse()?,
        data_dir: data.to_owned(),
        ..Config::default()
    };
    config.base.conda.image = Some(base.parse()?);
    config.base.python.image = Some(base.parse()?);
    config.base.python.python = None;
    NativeBuilder::from_config(&config, kiln.pusher()?, store).map_err(anyhow::Error::msg)
}
