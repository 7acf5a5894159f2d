//! The conda side of search: every package name of the configured channels, in memory.
//!
//! The index holds every package name in the channels' `linux-64`, `linux-aarch64` and
//! `noarch` subdirs (with its summary from `channeldata.json` when the channel has one), loaded
//! on first use and refreshed hourly in the background. The names come from the same
//! [`Repodata`] gateway builds solve with, which lists them without parsing a record; the latest
//! version of the (at most [`MAX_CONDA_HITS`]) hits of a search is read from the gateway when
//! the search asks, so only the records of names someone looked at are ever parsed. Names are
//! kept sorted, so prefix matches are a binary search; substring matches are a linear scan,
//! done only when the prefix matches do not already fill the answer.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use url::Url;

use rattler_conda_types::{MatchSpec, PackageName, Subdir};

use super::lock;
use crate::resolve::{Repodata, ResolveError};

/// The most conda hits one search answers: enough for a dropdown, small enough to send on
/// every keystroke.
pub const MAX_CONDA_HITS: usize = 20;

/// The subdirs indexed: kiln builds `linux/amd64` and `linux/arm64` images.
pub const SUBDIRS: [&str; 3] = ["linux-64", "linux-aarch64", "noarch"];

/// [`SUBDIRS`] as the gateway names them.
const GATEWAY_SUBDIRS: [Subdir; 3] = [Subdir::Linux64, Subdir::LinuxAarch64, Subdir::NoArch];

/// How often the conda index is downloaded again (revalidated with ETags, so mostly cheap).
const REFRESH: Duration = Duration::from_secs(3600);

/// The first retry after a load that missed some repodata; it doubles up to [`REFRESH`], so a
/// channel that is down for good is not asked every minute forever.
const RETRY: Duration = Duration::from_secs(60);

/// How long the first search waits for the first load; later ones never wait.
const FIRST_LOAD_WAIT: Duration = Duration::from_secs(10);

/// How long a `channeldata.json` download may take.
const CHANNELDATA_TIMEOUT: Duration = Duration::from_secs(120);

/// A conda package in one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CondaHit {
    /// The package name.
    pub name: String,
    /// The channel that has it, as configured.
    pub channel: String,
    /// The latest version in the indexed subdirs (empty when the gateway could not say).
    pub version: String,
    /// From the channel's `channeldata.json`, when it has one.
    pub summary: Option<String>,
}
/// The package names of one subdir, with their newest version when it is known.
#[derive(Debug, Default)]
pub struct RepodataNames {
    /// Name → (version as written, parsed for comparison); `None` when only the name is known
    /// (the version is then looked up when a search finds it).
    latest: HashMap<String, Option<(String, rattler_conda_types::Version)>>,
}

impl RepodataNames {
    /// Reads only names and versions: a full parse of conda-forge's repodata would hold
    /// gigabytes for a few thousand names. Records with versions conda cannot parse are
    /// skipped.
    pub fn parse(bytes: &[u8]) -> Result<RepodataNames, serde_json::Error> {
        let document: RepodataDocument = serde_json::from_slice(bytes)?;
        let mut latest: HashMap<String, Option<(String, rattler_conda_types::Version)>> =
            HashMap::new();
        for record in document.packages.into_iter().chain(document.conda_packages) {
            match latest.entry(record.name) {
                MapEntry::Occupied(mut known) => {
                    // Most records repeat a version (one per build): skip the parse.
                    if let Some(current) = known.get()
                        && current.0 != record.version
                        && let Ok(version) = rattler_conda_types::Version::from_str(&record.version)
                        && version > current.1
                    {
                        known.insert(Some((record.version, version)));
                    }
                }
                MapEntry::Vacant(slot) => {
                    if let Ok(version) = rattler_conda_types::Version::from_str(&record.version) {
                        slot.insert(Some((record.version, version)));
                    }
                }
            }
        }
        Ok(RepodataNames { latest })
    }

    /// Names whose versions are not known yet.
    pub fn from_names(names: impl IntoIterator<Item = String>) -> RepodataNames {
        RepodataNames {
            latest: names.into_iter().map(|name| (name, None)).collect(),
        }
    }

    /// How many package names it has.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// True when it has no packages.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// The parts of a `repodata.json` the index reads.
#[derive(Deserialize)]
struct RepodataDocument {
    #[serde(default, deserialize_with = "map_values")]
    packages: Vec<NameVersion>,
    #[serde(default, rename = "packages.conda", deserialize_with = "map_values")]
    conda_packages: Vec<NameVersion>,
}

/// The parts of a repodata record the index reads.
#[derive(Deserialize)]
struct NameVersion {
    name: String,
    version: String,
}

/// The values of a `file name → record` map: the file names are not needed.
fn map_values<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<NameVersion>, D::Error> {
    struct Values;
    impl<'de> Visitor<'de> for Values {
        type Value = Vec<NameVersion>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of package records")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut records = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some((IgnoredAny, record)) = map.next_entry::<IgnoredAny, NameVersion>()? {
                records.push(record);
            }
            Ok(records)
        }
    }
    deserializer.deserialize_map(Values)
}

/// Package summaries from a channel's `channeldata.json`.
#[derive(Debug, Default)]
pub struct Summaries {
    by_name: HashMap<String, Arc<str>>,
}

impl Summaries {
    /// Reads `packages.<name>.summary`; empty summaries are left out.
    pub fn parse(bytes: &[u8]) -> Result<Summaries, serde_json::Error> {
        #[derive(Deserialize)]
        struct Channeldata {
            #[serde(default)]
            packages: HashMap<String, Package>,
        }
        #[derive(Deserialize)]
        struct Package {
            #[serde(default)]
            summary: Option<String>,
        }
        let document: Channeldata = serde_json::from_slice(bytes)?;
        let by_name = document
            .packages
            .into_iter()
            .filter_map(|(name, package)| {
                let summary = package.summary?.trim().to_owned();
                (!summary.is_empty()).then(|| (name, Arc::from(summary)))
            })
            .collect();
        Ok(Summaries { by_name })
    }
}

/// What one channel contributes to the index.
#[derive(Debug)]
pub struct ChannelPackages {
    /// The channel name, as configured.
    pub name: String,
    /// Its subdirs' repodata.
    pub repodata: Vec<Arc<RepodataNames>>,
    /// Its summaries (empty without `channeldata.json`).
    pub summaries: Arc<Summaries>,
}

/// Every conda package name (with its latest version when known), sorted by name then
/// channel priority.
#[derive(Debug, Default)]
pub struct CondaIndex {
    entries: Vec<IndexEntry>,
    channels: Vec<String>,
}

/// One package of one channel.
#[derive(Debug)]
struct IndexEntry {
    name: Box<str>,
    /// Index into [`CondaIndex::channels`], which is also its priority.
    channel: usize,
    /// Empty when not known yet.
    version: Box<str>,
    summary: Option<Arc<str>>,
}

impl CondaIndex {
    /// Merges the channels' subdirs (keeping each name's latest version) and sorts.
    pub fn build(channels: &[ChannelPackages]) -> CondaIndex {
        let mut entries = Vec::new();
        for (position, channel) in channels.iter().enumerate() {
            let mut latest: HashMap<&str, &Option<(String, rattler_conda_types::Version)>> =
                HashMap::new();
            for subdir in &channel.repodata {
                for (name, candidate) in &subdir.latest {
                    match latest.entry(name) {
                        MapEntry::Occupied(mut known) => {
                            let newer = match (candidate, known.get()) {
                                (Some(candidate), Some(known)) => candidate.1 > known.1,
                                (Some(_), None) => true,
                                (None, _) => false,
                            };
                            if newer {
                                known.insert(candidate);
                            }
                        }
                        MapEntry::Vacant(slot) => {
                            slot.insert(candidate);
                        }
                    }
                }
            }
            entries.extend(latest.into_iter().map(|(name, version)| IndexEntry {
                name: name.into(),
                channel: position,
                version: version.as_ref().map_or("", |(v, _)| v.as_str()).into(),
                summary: channel.summaries.by_name.get(name).cloned(),
            }));
        }
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name).then(a.channel.cmp(&b.channel)));
        CondaIndex {
            entries,
            channels: channels.iter().map(|c| c.name.clone()).collect(),
        }
    }

    /// How many (channel, package) entries it has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when it has no packages.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Up to `limit` packages whose name starts with `name` (first) or contains it; shorter
    /// names first, then alphabetical, then by channel priority. `name` must be lowercase.
    pub fn search(&self, name: &str, limit: usize) -> Vec<CondaHit> {
        if name.is_empty() || limit == 0 {
            return Vec::new();
        }
        // Entries are sorted, so the names starting with `name` are one run from here.
        let start = self.entries.partition_point(|e| &*e.name < name);
        let end = start + self.entries[start..].partition_point(|e| e.name.starts_with(name));
        // Sorting by (substring?, length, position) is the ranking: positions are in
        // (name, channel) order.
        let mut ranked: Vec<(bool, usize, usize)> = (start..end)
            .map(|i| (false, self.entries[i].name.len(), i))
            .collect();
        if ranked.len() < limit {
            // Substring matches rank after every prefix match: only needed when those are few.
            ranked.extend(
                self.entries
                    .iter()
                    .enumerate()
                    .filter(|&(i, e)| (i < start || i >= end) && e.name.contains(name))
                    .map(|(i, e)| (true, e.name.len(), i)),
            );
        }
        if ranked.len() > limit {
            ranked.select_nth_unstable(limit - 1);
            ranked.truncate(limit);
        }
        ranked.sort_unstable();
        ranked
            .into_iter()
            .map(|(_, _, i)| {
                let entry = &self.entries[i];
                CondaHit {
                    name: entry.name.to_string(),
                    channel: self.channels[entry.channel].clone(),
                    version: entry.version.to_string(),
                    summary: entry.summary.as_deref().map(str::to_owned),
                }
            })
            .collect()
    }
}

/// Searches the configured channels' package names: the index, kept fresh in the background,
/// and the versions of the hits.
pub(super) struct CondaSearch {
    http: reqwest::Client,
    /// The repodata builds read too: names, and versions of hits.
    repodata: Repodata,
    /// The subdirs of each channel that the current index has names of.
    subdirs: Mutex<HashMap<String, Vec<Subdir>>>,
    /// Channel name → where it is read from (or why its mirror is not a URL), in priority
    /// order.
    pub(super) channels: Vec<(String, Result<Url, String>)>,
    /// The published index; searches read it without waiting.
    loaded: watch::Sender<Loaded>,
    /// Set once the background refresh has been started.
    started: AtomicBool,
    /// The last good `channeldata.json` of every channel, with its ETag, to revalidate, and to
    /// fall back on when a refresh cannot download it.
    files: Mutex<HashMap<Url, CachedFile>>,
}

/// What searches see of the loading.
#[derive(Debug, Clone, Default)]
struct Loaded {
    /// The current index, once one has been built.
    index: Option<Arc<CondaIndex>>,
    /// True once a load has finished, successfully or not: the first search stops waiting.
    attempted: bool,
}

#[derive(Debug, Clone)]
struct CachedFile {
    etag: Option<String>,
    summaries: Arc<Summaries>,
}

impl CondaSearch {
    pub(super) fn new(
        http: reqwest::Client,
        repodata: Repodata,
        channels: Vec<(String, Result<Url, String>)>,
    ) -> CondaSearch {
        CondaSearch {
            http,
            repodata,
            subdirs: Mutex::new(HashMap::new()),
            channels,
            loaded: watch::Sender::new(Loaded::default()),
            started: AtomicBool::new(false),
            files: Mutex::new(HashMap::new()),
        }
    }

    /// Conda hits for a lowercase name. Only the very first search can wait (for the first
    /// load, at most [`FIRST_LOAD_WAIT`]).
    pub(super) async fn search(self: &Arc<Self>, name: &str) -> Vec<CondaHit> {
        let Some(index) = self.current().await else {
            return Vec::new();
        };
        let mut hits = index.search(name, MAX_CONDA_HITS);
        self.fill_versions(&mut hits).await;
        hits
    }

    /// The current conda index, starting the background load on first use.
    pub(super) async fn current(self: &Arc<Self>) -> Option<Arc<CondaIndex>> {
        self.start();
        let mut loaded = self.loaded.subscribe();
        let first = tokio::time::timeout(FIRST_LOAD_WAIT, loaded.wait_for(|l| l.attempted)).await;
        if first.is_err() {
            tracing::debug!("the conda package index is still loading; answering without it");
        }
        self.loaded.borrow().index.clone()
    }

    fn start(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(keep_fresh(Arc::downgrade(self)));
        }
    }

    /// Downloads (or revalidates) everything now and publishes the new index. True when every
    /// repodata was read.
    pub(super) async fn refresh(&self) -> bool {
        let started = Instant::now();
        let channels = futures_util::future::join_all(
            self.channels
                .iter()
                .map(|(name, url)| self.channel(name, url)),
        )
        .await;
        let complete = channels.iter().all(|(_, complete)| *complete);
        let packages: Vec<ChannelPackages> = channels.into_iter().map(|(c, _)| c).collect();
        let anything = packages.iter().any(|c| !c.repodata.is_empty());
        if !anything && !complete {
            tracing::warn!(
                "no conda repodata could be downloaded; search keeps its previous package index"
            );
            self.loaded.send_modify(|loaded| loaded.attempted = true);
            return false;
        }
        let index = tokio::task::spawn_blocking(move || CondaIndex::build(&packages)).await;
        match index {
            Ok(index) => {
                tracing::info!(
                    packages = index.len(),
                    complete,
                    elapsed_ms = started.elapsed().as_millis(),
                    "conda package index loaded"
                );
                self.loaded.send_modify(|loaded| {
                    loaded.index = Some(Arc::new(index));
                    loaded.attempted = true;
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, "building the conda package index failed; search keeps its previous one");
                self.loaded.send_modify(|loaded| loaded.attempted = true);
                return false;
            }
        }
        complete
    }

    /// One channel's subdir names (from the gateway) and summaries; false when some subdir
    /// could not be read. A subdir the channel does not have (a 404) is left out.
    async fn channel(&self, name: &str, base: &Result<Url, String>) -> (ChannelPackages, bool) {
        let mut packages = ChannelPackages {
            name: name.to_owned(),
            repodata: Vec::new(),
            summaries: Arc::default(),
        };
        let base = match base {
            Ok(base) => base,
            Err(reason) => {
                tracing::warn!(channel = name, %reason, "search cannot index this channel");
                return (packages, false);
            }
        };
        let subdir_names = |subdir: Subdir| async move {
            let channel = self.repodata.load(name, &[subdir]).await?;
            let names = self
                .repodata
                .names(&channel, &[subdir])
                .await
                .map_err(|err| ResolveError::BadRepodata {
                    channel: name.to_owned(),
                    url: channel.base_url.to_string(),
                    reason: crate::error_chain(&err),
                })?;
            Ok::<_, ResolveError>((subdir, names))
        };
        let (subdirs, channeldata) = tokio::join!(
            futures_util::future::join_all(GATEWAY_SUBDIRS.map(subdir_names)),
            self.channeldata(name, base),
        );
        let mut complete = true;
        let mut loaded = Vec::new();
        for subdir in subdirs {
            match subdir {
                Ok((subdir, names)) => {
                    loaded.push(subdir);
                    packages.repodata.push(Arc::new(RepodataNames::from_names(
                        names.into_iter().map(|n| n.as_normalized().to_owned()),
                    )));
                }
                Err(ResolveError::ChannelStatus { status: 404, .. }) => {}
                Err(err) => {
                    tracing::warn!(channel = name, error = %err, "search cannot read this subdir");
                    complete = false;
                }
            }
        }
        lock(&self.subdirs).insert(name.to_owned(), loaded);
        if let Some(summaries) = channeldata {
            packages.summaries = summaries;
        }
        (packages, complete)
    }

    /// The latest version of every hit whose version the index does not know, from the
    /// records of those names only. Hits it cannot look up keep an empty version.
    async fn fill_versions(&self, hits: &mut [CondaHit]) {
        let mut by_channel: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, hit) in hits.iter().enumerate() {
            if hit.version.is_empty() {
                by_channel.entry(hit.channel.clone()).or_default().push(i);
            }
        }
        for (name, positions) in by_channel {
            let subdirs = lock(&self.subdirs).get(&name).cloned().unwrap_or_default();
            let Ok(channel) = self.repodata.channel(&name) else {
                continue;
            };
            let specs = positions
                .iter()
                .filter_map(|&i| PackageName::try_from(hits[i].name.as_str()).ok())
                .map(MatchSpec::from)
                .collect();
            let records = match self
                .repodata
                .query(&[channel], &subdirs, specs, false)
                .await
            {
                Ok(records) => records,
                Err(err) => {
                    tracing::warn!(channel = name, error = %crate::error_chain(&err), "search cannot read versions");
                    continue;
                }
            };
            let mut latest: HashMap<&str, &rattler_conda_types::VersionWithSource> = HashMap::new();
            for record in records.iter().flat_map(|set| set.iter()) {
                let package = &record.package_record;
                let known = latest
                    .entry(package.name.as_normalized())
                    .or_insert(&package.version);
                if package.version.version() > known.version() {
                    *known = &package.version;
                }
            }
            for i in positions {
                if let Some(version) = latest.get(hits[i].name.as_str()) {
                    hits[i].version = version.as_str().into_owned();
                }
            }
        }
    }

    /// The channel's summaries: revalidated with its ETag; the last good copy when it cannot
    /// be downloaded now; `None` when the channel has none.
    async fn channeldata(&self, channel: &str, base: &Url) -> Option<Arc<Summaries>> {
        let url = base.join("channeldata.json").ok()?;
        let cached = lock(&self.files).get(&url).cloned();
        match self.download_channeldata(&url, cached.as_ref()).await {
            Ok(summaries) => summaries,
            Err(reason) => {
                tracing::warn!(channel, %url, %reason, "cannot refresh channeldata; search keeps the copy it has");
                cached.map(|cached| cached.summaries)
            }
        }
    }

    async fn download_channeldata(
        &self,
        url: &Url,
        cached: Option<&CachedFile>,
    ) -> Result<Option<Arc<Summaries>>, String> {
        let mut request = self.http.get(url.clone()).timeout(CHANNELDATA_TIMEOUT);
        if let Some(CachedFile {
            etag: Some(etag), ..
        }) = cached
        {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let response = request
            .send()
            .await
            .map_err(|err| crate::error_chain(&err))?;
        match response.status().as_u16() {
            304 => {
                return cached
                    .map(|cached| Some(cached.summaries.clone()))
                    .ok_or_else(|| "answered 304 Not Modified to a plain GET".to_owned());
            }
            404 => {
                lock(&self.files).remove(url);
                return Ok(None);
            }
            200 => {}
            status => return Err(format!("answered HTTP {status}")),
        }
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .bytes()
            .await
            .map_err(|err| crate::error_chain(&err))?;
        let summaries = tokio::task::spawn_blocking(move || Summaries::parse(&bytes))
            .await
            .map_err(|err| err.to_string())?
            .map_err(|err| format!("is not valid channeldata JSON: {err}"))?;
        let summaries = Arc::new(summaries);
        lock(&self.files).insert(
            url.clone(),
            CachedFile {
                etag,
                summaries: summaries.clone(),
            },
        );
        Ok(Some(summaries))
    }
}

/// Refreshes hourly for as long as the index is in use. A load that missed some repodata is
/// retried sooner, with a growing delay.
async fn keep_fresh(inner: Weak<CondaSearch>) {
    let mut every = tokio::time::interval(REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let mut retry = RETRY;
        loop {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            let complete = strong.refresh().await;
            drop(strong);
            if complete || retry >= REFRESH {
                break;
            }
            tokio::time::sleep(retry).await;
            retry *= 2;
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::search) fn repodata(records: &[(&str, &str)]) -> Vec<u8> {
        let packages: serde_json::Map<String, serde_json::Value> = records
            .iter()
            .enumerate()
            .map(|(i, (name, version))| {
                (
                    format!("{name}-{version}-{i}.conda"),
                    serde_json::json!({"name": name, "version": version, "build": "h0_0",
                        "build_number": 0, "depends": []}),
                )
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"info": {"subdir": "linux-64"},
            "packages": {}, "packages.conda": packages, "repodata_version": 1}))
        .unwrap()
    }

    fn channel(name: &str, subdirs: &[&[(&str, &str)]]) -> ChannelPackages {
        ChannelPackages {
            name: name.to_owned(),
            repodata: subdirs
                .iter()
                .map(|records| Arc::new(RepodataNames::parse(&repodata(records)).unwrap()))
                .collect(),
            summaries: Arc::default(),
        }
    }

    pub(in crate::search) fn names(hits: &[CondaHit]) -> Vec<&str> {
        hits.iter().map(|hit| hit.name.as_str()).collect()
    }

    #[test]
    fn prefix_matches_come_before_substring_matches_shorter_first() {
        let index = CondaIndex::build(&[channel(
            "bioconda",
            &[&[
                ("bam-readcount", "1.0"),
                ("pysam", "0.22"),
                ("samtools", "1.21"),
                ("sam", "0.1"),
                ("samblaster", "0.1.26"),
                ("perl-bio-samtools", "1.43"),
                ("samba", "4.0"),
                ("unrelated", "1.0"),
            ]],
        )]);
        assert_eq!(
            names(&index.search("sam", 20)),
            [
                "sam",
                "samba",
                "samtools",
                "samblaster",
                "pysam",
                "perl-bio-samtools"
            ]
        );
        assert_eq!(names(&index.search("sam", 2)), ["sam", "samba"]);
        assert_eq!(
            names(&index.search("tools", 20)),
            ["samtools", "perl-bio-samtools"]
        );
        assert!(index.search("", 20).is_empty());
        assert!(index.search("zzz", 20).is_empty());
    }

    #[test]
    fn substring_matches_fill_up_after_few_prefix_matches() {
        let records: Vec<(String, &str)> = (0..30).map(|i| (format!("lib{i:02}x"), "1")).collect();
        let records: Vec<(&str, &str)> = records.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let mut all = records.clone();
        all.push(("x", "1"));
        all.push(("xz", "5.4"));
        let index = CondaIndex::build(&[channel("conda-forge", &[&all])]);
        let hits = index.search("x", MAX_CONDA_HITS);
        assert_eq!(hits.len(), MAX_CONDA_HITS);
        assert_eq!(names(&hits[..4]), ["x", "xz", "lib00x", "lib01x"]);
    }

    #[test]
    fn the_latest_version_across_subdirs_wins_and_channels_keep_their_order() {
        let index = CondaIndex::build(&[
            channel(
                "bioconda",
                &[
                    &[
                        ("samtools", "1.9"),
                        ("samtools", "1.21"),
                        ("samtools", "1.10"),
                    ],
                    &[("samtools", "1.20")],
                    &[("samtools", "not a version!")],
                ],
            ),
            channel("conda-forge", &[&[("samtools", "0.1.19")]]),
        ]);
        let hits = index.search("samtools", 20);
        let found: Vec<(&str, &str)> = hits
            .iter()
            .map(|hit| (hit.channel.as_str(), hit.version.as_str()))
            .collect();
        assert_eq!(found, [("bioconda", "1.21"), ("conda-forge", "0.1.19")]);
    }

    #[test]
    fn summaries_come_from_channeldata() {
        let summaries = Summaries::parse(
            br#"{"channeldata_version": 1, "packages": {"samtools": {"summary": " Tools for SAM/BAM ",
                "version": "1.21"}, "bcftools": {"summary": ""}, "htslib": {}}}"#,
        )
        .unwrap();
        let mut bioconda = channel(
            "bioconda",
            &[&[
                ("samtools", "1.21"),
                ("bcftools", "1.21"),
                ("htslib", "1.21"),
            ]],
        );
        bioconda.summaries = Arc::new(summaries);
        let index = CondaIndex::build(&[bioconda]);
        assert_eq!(
            index.search("samtools", 1)[0].summary.as_deref(),
            Some("Tools for SAM/BAM")
        );
        assert_eq!(index.search("bcftools", 1)[0].summary, None);
        assert_eq!(index.search("htslib", 1)[0].summary, None);
    }
}
