//! kiln's default bases, made on first use: a fresh install needs no bootstrap step.
//!
//! The first build that needs `kiln/base/debian:<suite>` (or the Python base) and finds it
//! missing makes it from Debian's packages; builds asking at the same time wait for that one
//! rather than making it again (single flight per repository and tag).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::create::{DebianBase, create};
use super::keyring::Keyring;
use super::mirror::Mirror;
use crate::base::{BaseError, BaseImage, registry};
use crate::config::Config;
use crate::registry::client::RegistryClient;

/// Makes kiln's own bases when they are missing, once.
pub struct BaseMaker {
    mirror: Mirror,
    client: RegistryClient,
    work_dir: PathBuf,
    /// One lock per `repository:tag` being checked or made.
    flights: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for BaseMaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseMaker")
            .field("mirror", &self.mirror.url().as_str())
            .field("suite", &self.mirror.suite())
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

impl BaseMaker {
    /// A maker reading `config`'s Debian mirror with its keyring (Debian's archive keys unless
    /// `base.debian_keyring` names others), caching indexes and `.deb`s under the data
    /// directory and pushing with `client`.
    pub fn from_config(
        config: &Config,
        http: reqwest::Client,
        client: RegistryClient,
    ) -> Result<BaseMaker, BaseError> {
        let keyring = match &config.base.debian_keyring {
            Some(path) => Keyring::load(path)?,
            None => Keyring::debian(),
        };
        let mirror = Mirror::new(
            http,
            config.base.debian_mirror.clone(),
            &config.base.debian_suite,
            keyring,
            config.data_dir.join("cache/debian"),
        );
        Ok(BaseMaker {
            mirror,
            client,
            work_dir: config.work_dir().join("bases"),
            flights: tokio::sync::Mutex::default(),
        })
    }

    /// The mirror bases are made from.
    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    /// Makes `base` unless its tag is already in the registry; returns the image when it was
    /// made by this call.
    pub async fn ensure(
        &self,
        base: &DebianBase,
        log: impl FnMut(&str) + Send,
    ) -> Result<Option<BaseImage>, BaseError> {
        let key = format!("{}:{}", base.repository, base.tag);
        let flight = {
            let mut flights = self.flights.lock().await;
            flights.entry(key.clone()).or_default().clone()
        };
        let _made_here = flight.lock().await;
        if self.exists(base).await? {
            return Ok(None);
        }
        let work = self.work_dir.join(format!(
            "{}-{}",
            base.repository.replace('/', "_"),
            base.tag
        ));
        let _ = tokio::fs::remove_dir_all(&work).await;
        let made = create(base, &self.mirror, &self.client, &work, log).await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        made.map(Some)
    }

    async fn exists(&self, base: &DebianBase) -> Result<bool, BaseError> {
        let found = self
            .client
            .tag_digest(&base.repository, &base.tag)
            .await
            .map_err(registry(format!(
                "looking up {}/{}:{}",
                self.client.registry(),
                base.repository,
                base.tag
            )))?;
        Ok(found.is_some())
    }
}
