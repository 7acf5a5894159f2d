//! Conda repodata, read lazily through rattler's gateway and kept in memory across builds.
//!
//! One [`Repodata`] serves both the solver and package search. The gateway reads a channel's
//! sharded repodata (CEP-16) when the channel serves it, else `repodata.json.zst` or
//! `repodata.json`, caches the files under the data directory and revalidates them with
//! conditional requests, and parses only the records of the package names a query asks for
//! (memory-mapped, sparse), so a two-package solve on conda-forge never parses the whole
//! subdir.
//!
//! What the gateway holds in memory is dropped per subdir once it is older than
//! [`MAX_AGE`]; the next query revalidates the cached file (a `304` when nothing changed) and
//! indexes it again. Requests to a channel with a configured mirror go to the mirror
//! (rattler's mirror middleware), while channels and records keep the canonical URL.
//!
//! The gateway takes a subdir it cannot find as empty (so that a channel without
//! `linux-aarch64` can still be asked). kiln does not: a mirror or channel that answers an
//! error for the target's subdir or `noarch` is misconfigured, and a silently empty channel
//! turns into a confusing "no candidates" from the solver. A middleware notes every failed
//! `repodata.json` answer so the load can fail with the URL that answered.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rattler_conda_types::{Channel, MatchSpec, PackageName, Subdir};
use rattler_networking::mirror_middleware::{Mirror, MirrorMiddleware};
use rattler_repodata_gateway::{CacheClearMode, Gateway, GatewayError, SubdirSelection};
use reqwest_middleware::{Middleware, Next};
use url::Url;

use super::conda::ResolveError;

/// Where conda packages come from when a channel has no configured mirror.
const DEFAULT_CHANNEL_HOST: &str = "https://conda.anaconda.org";

/// How long a subdir's index stays in memory before the next query revalidates it. Channels
/// publish new packages every few minutes; a build that misses one by five minutes is fine,
/// and revalidating is a conditional request plus an index of the cached file.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// How many repodata requests the gateway runs at once (shards are many small files).
const MAX_CONCURRENT_REQUESTS: usize = 50;

/// The channels' repodata, shared by every build and search; cheap to clone.
#[derive(Clone)]
pub struct Repodata {
    gateway: Gateway,
    mirrors: BTreeMap<String, String>,
    /// When each (canonical channel URL, subdir) was first read into memory.
    loaded: Arc<Mutex<HashMap<(Url, Subdir), Instant>>>,
    /// Failed `repodata.json` answers by canonical URL: the URL that answered and its status.
    failures: Arc<Mutex<HashMap<Url, (Url, u16)>>>,
}

impl std::fmt::Debug for Repodata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repodata")
            .field("mirrors", &self.mirrors)
            .finish_non_exhaustive()
    }
}

/// Locks a map; a panic elsewhere while holding it leaves nothing half-written that matters.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Repodata {
    /// Repodata cached under `cache_dir`, read over `http` (kiln's client, which trusts the
    /// system's certificates), with the channels named in `mirrors` read from the mapped URL.
    pub fn new(
        http: reqwest::Client,
        cache_dir: std::path::PathBuf,
        mirrors: BTreeMap<String, String>,
    ) -> Repodata {
        let failures = Arc::new(Mutex::new(HashMap::new()));
        // Mirror URLs that do not parse are reported by `channel_url` when a build names the
        // channel; here they are simply not mapped.
        let mirror_map = mirror_map(&mirrors).unwrap_or_default();
        let client = reqwest_middleware::ClientBuilder::new(http)
            .with(FailedRepodata {
                failures: Arc::clone(&failures),
            })
            .with(mirror_middleware(mirror_map))
            .build();
        let gateway = Gateway::builder()
            .with_client(client)
            .with_cache_dir(cache_dir)
            .with_max_concurrent_requests(MAX_CONCURRENT_REQUESTS)
            .finish();
        Repodata {
            gateway,
            mirrors,
            loaded: Arc::default(),
            failures,
        }
    }

    /// The gateway, for queries that need no more than it offers (benchmarks, tests).
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The URL a channel name is read from: its mirror, or its canonical URL.
    pub fn channel_url(&self, channel: &str) -> Result<Url, ResolveError> {
        match self.mirrors.get(channel) {
            Some(mirror) => directory_url(channel, mirror),
            None => canonical_channel_url(channel),
        }
    }

    /// Canonical channel URL → mirror URL, for every channel with a mirror: how downloads of
    /// the canonical package URLs in a solution reach the mirror.
    pub fn mirror_map(&self) -> Result<BTreeMap<Url, Url>, ResolveError> {
        mirror_map(&self.mirrors)
    }

    /// The channel as records name it: its canonical URL, whatever mirror serves it.
    pub fn channel(&self, name: &str) -> Result<Channel, ResolveError> {
        Ok(Channel::from_url(canonical_channel_url(name)?))
    }

    /// Makes `subdirs` of channel `name` ready in memory: drops what is older than
    /// [`MAX_AGE`], reads what is missing, and fails when the channel (or its mirror) cannot
    /// give a subdir's repodata, naming the URL that answered.
    pub async fn load(&self, name: &str, subdirs: &[Subdir]) -> Result<Channel, ResolveError> {
        let channel = self.channel(name)?;
        let base = channel.base_url.url().clone();
        let loads = subdirs.iter().map(|&subdir| {
            let channel = channel.clone();
            let base = base.clone();
            async move {
                self.expire(&base, subdir);
                let repodata_url = subdir_file(&base, subdir);
                let source = self
                    .channel_url(name)
                    .map(|url| subdir_file(&url, subdir).to_string())
                    .unwrap_or_else(|_| repodata_url.to_string());
                // Loads the subdir into the gateway (or finds it there); relations themselves
                // are not used.
                let loaded = self.gateway.channel_relations(&channel, subdir).await;
                if let Some((url, status)) = lock(&self.failures).get(&repodata_url).cloned() {
                    return Err(ResolveError::ChannelStatus {
                        channel: name.to_owned(),
                        url: url.to_string(),
                        status,
                    });
                }
                loaded.map_err(|err| gateway_error(name, &source, &err))?;
                Ok(())
            }
        });
        futures_util::future::try_join_all(loads).await?;
        Ok(channel)
    }

    /// Every package name of `channel`'s `subdirs`, which must be loaded.
    pub async fn names(
        &self,
        channel: &Channel,
        subdirs: &[Subdir],
    ) -> Result<Vec<PackageName>, GatewayError> {
        let output = self
            .gateway
            .names([channel.clone()], subdirs.iter().copied())
            .execute()
            .await?;
        Ok(output.names)
    }

    /// The records of `specs` (and, when `recursive`, of everything they depend on) in
    /// `channels`' `subdirs`, which must be loaded; one set per channel and subdir.
    pub async fn query(
        &self,
        channels: &[Channel],
        subdirs: &[Subdir],
        specs: Vec<MatchSpec>,
        recursive: bool,
    ) -> Result<Vec<rattler_repodata_gateway::RepoData>, GatewayError> {
        let output = self
            .gateway
            .query(channels.iter().cloned(), subdirs.iter().copied(), specs)
            .recursive(recursive)
            .execute()
            .await?;
        Ok(output.repodata)
    }

    /// Drops from memory every subdir, of any channel, read longer than [`MAX_AGE`] ago, and
    /// notes when `subdir` of `base` is (about to be) read. Sweeping them all, not only the one
    /// asked for, bounds memory to the channels requests named in the last [`MAX_AGE`].
    fn expire(&self, base: &Url, subdir: Subdir) {
        let now = Instant::now();
        let mut loaded = lock(&self.loaded);
        loaded.retain(|(old_base, old_subdir), at| {
            if now.duration_since(*at) < MAX_AGE {
                return true;
            }
            let selection = SubdirSelection::Some([old_subdir.as_str().to_owned()].into());
            let channel = Channel::from_url(old_base.clone());
            if let Err(err) = self.gateway.clear_repodata_cache(
                &channel,
                selection,
                CacheClearMode::InMemoryOnly,
            ) {
                tracing::warn!(channel = %old_base, subdir = %old_subdir, error = %err, "cannot drop old repodata from memory");
            }
            lock(&self.failures).remove(&subdir_file(old_base, *old_subdir));
            false
        });
        loaded.entry((base.clone(), subdir)).or_insert(now);
    }
}

/// `<channel>/<subdir>/repodata.json`.
fn subdir_file(channel: &Url, subdir: Subdir) -> Url {
    let mut url = channel.clone();
    let path = format!(
        "{}/{}/repodata.json",
        url.path().trim_end_matches('/'),
        subdir.as_str()
    );
    url.set_path(&path);
    url
}

/// A gateway failure to load `name`'s subdir at `url` (what kiln asked for, the mirror when
/// there is one), as kiln's error.
fn gateway_error(name: &str, url: &str, err: &GatewayError) -> ResolveError {
    let reason = crate::error_chain(err);
    match err {
        GatewayError::ReqwestError(_)
        | GatewayError::ReqwestMiddlewareError(_)
        | GatewayError::FetchRepoDataError(
            rattler_repodata_gateway::fetch::FetchRepoDataError::HttpError(_)
            | rattler_repodata_gateway::fetch::FetchRepoDataError::FailedToDownload(..),
        ) => ResolveError::Unreachable {
            channel: name.to_owned(),
            url: url.to_owned(),
            reason,
        },
        _ => ResolveError::BadRepodata {
            channel: name.to_owned(),
            url: url.to_owned(),
            reason,
        },
    }
}

/// Notes failed answers to `repodata.json` requests, by the URL asked (before the mirror
/// swaps it), and forgets them once the URL answers again.
struct FailedRepodata {
    failures: Arc<Mutex<HashMap<Url, (Url, u16)>>>,
}

#[async_trait::async_trait]
impl Middleware for FailedRepodata {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let asked = req.url().clone();
        let watched = asked.path().ends_with("/repodata.json");
        let response = next.run(req, extensions).await?;
        if watched {
            let status = response.status();
            let mut failures = lock(&self.failures);
            if status.is_success() || status == reqwest::StatusCode::NOT_MODIFIED {
                failures.remove(&asked);
            } else {
                failures.insert(asked, (response.url().clone(), status.as_u16()));
            }
        }
        Ok(response)
    }
}

/// Canonical channel URL → mirror URL for every mirrored channel.
fn mirror_map(mirrors: &BTreeMap<String, String>) -> Result<BTreeMap<Url, Url>, ResolveError> {
    mirrors
        .iter()
        .map(|(channel, mirror)| {
            Ok((
                canonical_channel_url(channel)?,
                directory_url(channel, mirror)?,
            ))
        })
        .collect()
}

/// Sends every request under a canonical channel URL (a key of `mirrors`) to the mirror it maps
/// to: repodata and package downloads alike, so a mirror is only transport.
pub fn mirror_middleware(mirrors: BTreeMap<Url, Url>) -> MirrorMiddleware {
    MirrorMiddleware::from_map(
        mirrors
            .into_iter()
            .map(|(canonical, url)| {
                let mirror = Mirror {
                    url,
                    no_zstd: false,
                    no_bz2: false,
                    max_failures: None,
                };
                (canonical, vec![mirror])
            })
            .collect(),
    )
}

/// `https://conda.anaconda.org/<channel>/`: the channel as the user named it, whatever mirror
/// serves it.
pub fn canonical_channel_url(channel: &str) -> Result<Url, ResolveError> {
    directory_url(channel, &format!("{DEFAULT_CHANNEL_HOST}/{channel}"))
}

/// `url` as a directory (with a trailing slash), so relative paths join below it.
fn directory_url(channel: &str, url: &str) -> Result<Url, ResolveError> {
    let with_slash = if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    };
    Url::parse(&with_slash).map_err(|_| ResolveError::BadChannelUrl {
        channel: channel.to_owned(),
        url: with_slash,
    })
}
