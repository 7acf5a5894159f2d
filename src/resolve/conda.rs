//! Solving conda entries with rattler for one target platform.
//!
//! Repodata is downloaded over HTTP from each channel's URL (a configured mirror, or
//! `https://conda.anaconda.org/<channel>`) for the target's subdir and `noarch`, and cached on
//! disk with its ETag, so repeated builds revalidate instead of downloading again.
//!
//! A mirror is only transport, as pixi treats mirrors: records, locks and the `conda-meta` of
//! images name every package by its channel's canonical URL, the channel as the user named it,
//! so the same request gives the same image on every kiln, whatever mirror it reads. Downloads
//! of those URLs go through the mirror again by [`CondaResolver::mirror_map`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rattler_conda_types::{
    Channel, GenericVirtualPackage, MatchSpec, PackageName, ParseMatchSpecOptions, RepoData,
    RepoDataRecord, Version, package::BuildString,
};
use rattler_solve::{SolveError, SolverImpl, SolverTask};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::lock::LockedPackage;
use crate::spec::{PackageEntry, Platform, Request};

/// Where conda packages come from when a channel has no configured mirror.
const DEFAULT_CHANNEL_HOST: &str = "https://conda.anaconda.org";

/// What the solve targets: a platform, and the facts of the base image it installs onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The image platform.
    pub platform: Platform,
    /// The base image's glibc version (`__glibc`).
    pub glibc: String,
}

/// Why a request could not be resolved. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("channel `{channel}` is not reachable at {url}: {reason}")]
    Unreachable {
        channel: String,
        url: String,
        reason: String,
    },
    #[error("channel `{channel}` answered {status} for {url}")]
    ChannelStatus {
        channel: String,
        url: String,
        status: u16,
    },
    #[error("the repodata of channel `{channel}` at {url} is not valid: {reason}")]
    BadRepodata {
        channel: String,
        url: String,
        reason: String,
    },
    #[error("channel `{channel}` maps to `{url}`, which is not a URL")]
    BadChannelUrl { channel: String, url: String },
    #[error("the packages cannot be satisfied for {platform}: {reason}")]
    Unsatisfiable { platform: Platform, reason: String },
    #[error("package `{name}` in the solution has no sha256 in its channel's repodata")]
    NoChecksum { name: String },
    #[error("the repodata cache at {path} cannot be written")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a solve chose: rattler's records (what the installer needs) and their lock entries.
#[derive(Debug, Clone)]
pub struct Solution {
    /// The records to install, sorted by name.
    pub records: Vec<RepoDataRecord>,
    /// The same packages as lock entries, in the same order.
    pub packages: Vec<LockedPackage>,
}

/// Solves conda requests; cheap to clone.
#[derive(Debug, Clone)]
pub struct CondaResolver {
    http: reqwest::Client,
    cache_dir: PathBuf,
    mirrors: BTreeMap<String, String>,
}

impl CondaResolver {
    /// A resolver that caches repodata under `cache_dir` and reads channels named in
    /// `mirrors` from the mapped URL.
    pub fn new(
        http: reqwest::Client,
        cache_dir: PathBuf,
        mirrors: BTreeMap<String, String>,
    ) -> Self {
        CondaResolver {
            http,
            cache_dir,
            mirrors,
        }
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
        self.mirrors
            .iter()
            .map(|(channel, mirror)| {
                Ok((
                    canonical_channel_url(channel)?,
                    directory_url(channel, mirror)?,
                ))
            })
            .collect()
    }

    /// Solves the conda entries of `request` for `target`.
    pub async fn solve(
        &self,
        request: &Request,
        target: &Target,
    ) -> Result<Solution, ResolveError> {
        let mut channel_names: Vec<String> =
            request.channels().iter().map(ToString::to_string).collect();
        for entry in request.conda_entries() {
            if let PackageEntry::Conda(spec) = entry
                && let Some(channel) = spec.channel()
                && !channel_names.iter().any(|c| c == channel)
            {
                channel_names.push(channel.to_owned());
            }
        }
        let mut channels = Vec::new();
        let mut repodata = Vec::new();
        for name in &channel_names {
            let channel = Channel::from_url(canonical_channel_url(name)?);
            let source = self.channel_url(name)?;
            let mut records = Vec::new();
            for subdir in [target.platform.conda_subdir(), "noarch"] {
                records.extend(self.records(name, &channel, &source, subdir).await?);
            }
            channels.push((name.clone(), channel));
            repodata.push(records);
        }
        let mut specs = request
            .conda_entries()
            .map(|entry| match_spec(entry, &channels))
            .collect::<Vec<_>>();
        // pip packages install into the environment's Python, so there must be one.
        let names_python = |spec: &MatchSpec| matches!(&spec.name, rattler_conda_types::PackageNameMatcher::Exact(name) if name.as_normalized() == "python");
        if request.has_pip() && !specs.iter().any(names_python) {
            specs.push(
                MatchSpec::from_str("python", ParseMatchSpecOptions::lenient())
                    .expect("`python` is a valid match spec"),
            );
        }
        let task = SolverTask {
            virtual_packages: virtual_packages(target),
            specs,
            ..SolverTask::from_iter(repodata.iter())
        };
        let solved = rattler_solve::resolvo::Solver.solve(task).map_err(|err| {
            ResolveError::Unsatisfiable {
                platform: target.platform,
                reason: match err {
                    SolveError::Unsolvable(reasons) => reasons.join("; "),
                    other => other.to_string(),
                },
            }
        })?;
        let mut records = solved.records;
        records.sort_by(|a, b| a.package_record.name.cmp(&b.package_record.name));
        let packages = records.iter().map(locked).collect::<Result<Vec<_>, _>>()?;
        Ok(Solution { records, packages })
    }

    /// The records of one channel subdir, read from `source` and named by `channel`'s canonical
    /// URL. A subdir the channel does not have is empty.
    async fn records(
        &self,
        name: &str,
        channel: &Channel,
        source: &Url,
        subdir: &str,
    ) -> Result<Vec<RepoDataRecord>, ResolveError> {
        let url = source
            .join(&format!("{subdir}/repodata.json"))
            .map_err(|_| ResolveError::BadChannelUrl {
                channel: name.to_owned(),
                url: source.to_string(),
            })?;
        let Some(bytes) = self.fetch_cached(name, &url).await? else {
            return Ok(Vec::new());
        };
        let repodata: RepoData =
            serde_json::from_slice(&bytes).map_err(|err| ResolveError::BadRepodata {
                channel: name.to_owned(),
                url: url.to_string(),
                reason: err.to_string(),
            })?;
        Ok(repodata.into_repo_data_records(channel))
    }

    /// GETs `url`, revalidating a cached copy with its ETag. `None` for a 404.
    async fn fetch_cached(
        &self,
        channel: &str,
        url: &Url,
    ) -> Result<Option<Vec<u8>>, ResolveError> {
        let key = hex::encode(Sha256::digest(url.as_str().as_bytes()));
        let body_path = self.cache_dir.join(format!("{key}.json"));
        let etag_path = self.cache_dir.join(format!("{key}.etag"));
        let cached_etag = tokio::fs::read_to_string(&etag_path).await.ok();
        let mut request = self.http.get(url.clone());
        if let Some(etag) = &cached_etag
            && body_path.exists()
        {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag.trim());
        }
        let unreachable = |err: reqwest::Error| ResolveError::Unreachable {
            channel: channel.to_owned(),
            url: url.to_string(),
            reason: crate::error_chain(&err),
        };
        let response = request.send().await.map_err(unreachable)?;
        match response.status().as_u16() {
            304 => {
                let bytes =
                    tokio::fs::read(&body_path)
                        .await
                        .map_err(|source| ResolveError::Cache {
                            path: body_path.clone(),
                            source,
                        })?;
                return Ok(Some(bytes));
            }
            404 => return Ok(None),
            200 => {}
            status => {
                return Err(ResolveError::ChannelStatus {
                    channel: channel.to_owned(),
                    url: url.to_string(),
                    status,
                });
            }
        }
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(unreachable)?.to_vec();
        self.store(&body_path, &bytes).await?;
        if let Some(etag) = etag {
            self.store(&etag_path, etag.as_bytes()).await?;
        }
        Ok(Some(bytes))
    }

    /// Writes a cache file atomically, so concurrent builds never read half of one.
    async fn store(&self, path: &std::path::Path, bytes: &[u8]) -> Result<(), ResolveError> {
        let cache_error = |source| ResolveError::Cache {
            path: path.to_owned(),
            source,
        };
        tokio::fs::create_dir_all(&self.cache_dir)
            .await
            .map_err(cache_error)?;
        let temp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&temp, bytes).await.map_err(cache_error)?;
        tokio::fs::rename(&temp, path).await.map_err(cache_error)
    }
}

/// `https://conda.anaconda.org/<channel>/`: the channel as the user named it, whatever mirror
/// serves it.
fn canonical_channel_url(channel: &str) -> Result<Url, ResolveError> {
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

/// The rattler spec of a validated entry, its channel pinned to the channel's canonical URL.
fn match_spec(entry: &PackageEntry, channels: &[(String, Channel)]) -> MatchSpec {
    let PackageEntry::Conda(spec) = entry else {
        unreachable!("only conda entries are solved here");
    };
    let without_channel = match spec.channel() {
        Some(channel) => entry.to_string()[channel.len() + 2..].to_owned(),
        None => entry.to_string(),
    };
    let mut parsed = MatchSpec::from_str(&without_channel, ParseMatchSpecOptions::lenient())
        .expect("entries are validated against rattler's parser in spec::conda");
    if let Some(name) = spec.channel() {
        parsed.channel = channels
            .iter()
            .find(|(channel, _)| channel == name)
            .map(|(_, channel)| Arc::new(channel.clone()));
    }
    parsed
}

/// The virtual packages the target offers: what the base image and platform promise.
fn virtual_packages(target: &Target) -> Vec<GenericVirtualPackage> {
    let archspec = match target.platform {
        Platform::LinuxAmd64 => "x86_64",
        Platform::LinuxArm64 => "aarch64",
    };
    [
        ("__unix", "0", "0"),
        ("__linux", "4.18", "0"),
        ("__glibc", target.glibc.as_str(), "0"),
        ("__archspec", "1", archspec),
    ]
    .into_iter()
    .filter_map(|(name, version, build)| {
        Some(GenericVirtualPackage {
            name: PackageName::new_unchecked(name),
            version: version.parse::<Version>().ok()?,
            build_string: BuildString::new_unchecked(build),
        })
    })
    .collect()
}

fn locked(record: &RepoDataRecord) -> Result<LockedPackage, ResolveError> {
    let package = &record.package_record;
    let sha256 = package.sha256.ok_or_else(|| ResolveError::NoChecksum {
        name: package.name.as_normalized().to_owned(),
    })?;
    Ok(LockedPackage {
        name: package.name.as_normalized().to_owned(),
        version: package.version.to_string(),
        build: package.build.to_string(),
        subdir: package.subdir.clone(),
        url: record.url.to_string(),
        sha256: hex::encode(sha256),
        size: package.size.unwrap_or(0),
        license: package.license.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_transport_and_channels_keep_their_canonical_url() {
        let mirrors = BTreeMap::from([(
            "bioconda".to_owned(),
            "http://mirror.example.org/bc".to_owned(),
        )]);
        let resolver = CondaResolver::new(reqwest::Client::new(), PathBuf::new(), mirrors);
        assert_eq!(
            resolver.channel_url("bioconda").unwrap().as_str(),
            "http://mirror.example.org/bc/"
        );
        assert_eq!(
            resolver.channel_url("conda-forge").unwrap().as_str(),
            "https://conda.anaconda.org/conda-forge/"
        );
        let map = resolver.mirror_map().unwrap();
        let pairs: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [(
                "https://conda.anaconda.org/bioconda/",
                "http://mirror.example.org/bc/"
            )]
        );
        let broken = CondaResolver::new(
            reqwest::Client::new(),
            PathBuf::new(),
            BTreeMap::from([("x".to_owned(), "not a url".to_owned())]),
        );
        assert!(matches!(
            broken.mirror_map(),
            Err(ResolveError::BadChannelUrl { .. })
        ));
    }
}
