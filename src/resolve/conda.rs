//! Solving conda entries with rattler for one target platform.
//!
//! Records come from [`Repodata`] (rattler's gateway, kept in memory across builds), for the
//! target's subdir and `noarch`: only the records of the requested names and what they depend
//! on are read. The solve itself is CPU-bound, so it runs on the blocking pool and the async
//! runtime keeps answering requests meanwhile.
//!
//! A mirror is only transport, as pixi treats mirrors: records, locks and the `conda-meta` of
//! images name every package by its channel's canonical URL, the channel as the user named it,
//! so the same request gives the same image on every kiln, whatever mirror it reads. Downloads
//! of those URLs go through the mirror again by [`CondaResolver::mirror_map`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rattler_conda_types::{
    Channel, GenericVirtualPackage, MatchSpec, PackageName, PackageNameMatcher,
    ParseMatchSpecOptions, RepoDataRecord, Subdir, Version, package::BuildString,
};
use rattler_solve::{SolveError, SolverImpl, SolverTask};
use url::Url;

use super::lock::LockedPackage;
use super::repodata::Repodata;
use crate::spec::{PackageEntry, Platform, Request};

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
    repodata: Repodata,
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
            repodata: Repodata::new(http, cache_dir, mirrors),
        }
    }

    /// The repodata it reads, to share with package search.
    pub fn repodata(&self) -> &Repodata {
        &self.repodata
    }

    /// The URL a channel name is read from: its mirror, or its canonical URL.
    pub fn channel_url(&self, channel: &str) -> Result<Url, ResolveError> {
        self.repodata.channel_url(channel)
    }

    /// Canonical channel URL → mirror URL, for every channel with a mirror: how downloads of
    /// the canonical package URLs in a solution reach the mirror.
    pub fn mirror_map(&self) -> Result<BTreeMap<Url, Url>, ResolveError> {
        self.repodata.mirror_map()
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
        let subdirs = [target_subdir(target.platform), Subdir::NoArch];
        let mut channels = Vec::new();
        for name in &channel_names {
            channels.push((name.clone(), self.repodata.load(name, &subdirs).await?));
        }
        let mut specs = request
            .conda_entries()
            .map(|entry| match_spec(entry, &channels))
            .collect::<Vec<_>>();
        // pip packages install into the environment's Python, so there must be one.
        let names_python = |spec: &MatchSpec| matches!(&spec.name, PackageNameMatcher::Exact(name) if name.as_normalized() == "python");
        if request.has_pip() && !specs.iter().any(names_python) {
            specs.push(
                MatchSpec::from_str("python", ParseMatchSpecOptions::lenient())
                    .expect("`python` is a valid match spec"),
            );
        }
        let only_channels: Vec<Channel> = channels.iter().map(|(_, c)| c.clone()).collect();
        let repodata = self
            .repodata
            .query(&only_channels, &subdirs, specs.clone(), true)
            .await
            .map_err(|err| ResolveError::Unreachable {
                channel: channel_names.join(", "),
                url: only_channels
                    .iter()
                    .map(|c| c.base_url.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                reason: crate::error_chain(&err),
            })?;
        let virtual_packages = virtual_packages(target);
        let platform = target.platform;
        let solved = tokio::task::spawn_blocking(move || {
            let task = SolverTask {
                virtual_packages,
                specs,
                ..SolverTask::from_iter(&repodata)
            };
            rattler_solve::resolvo::Solver.solve(task)
        })
        .await
        .map_err(|err| ResolveError::Unsatisfiable {
            platform,
            reason: format!("the solver stopped: {err}"),
        })?
        .map_err(|err| ResolveError::Unsatisfiable {
            platform,
            reason: match err {
                SolveError::Unsolvable(reasons) => reasons.join("; "),
                other => other.to_string(),
            },
        })?;
        let mut records = solved.records;
        records.sort_by(|a, b| a.package_record.name.cmp(&b.package_record.name));
        let packages = records.iter().map(locked).collect::<Result<Vec<_>, _>>()?;
        tracing::info!(platform = %target.platform, packages = packages.len(), "solved the conda packages");
        Ok(Solution { records, packages })
    }
}

/// The conda subdir of an image platform.
pub fn target_subdir(platform: Platform) -> Subdir {
    match platform {
        Platform::LinuxAmd64 => Subdir::Linux64,
        Platform::LinuxArm64 => Subdir::LinuxAarch64,
    }
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
