//! Package search for the web UI's autocomplete: conda names from the configured channels and
//! an exact-name lookup on the pip index.
//!
//! Autocomplete asks on every keystroke, so a search must never wait on the network. The
//! conda side is an in-memory index of every package name in the channels' `linux-64`,
//! `linux-aarch64` and `noarch` subdirs (with its summary from `channeldata.json` when the
//! channel has one), loaded on first use and refreshed hourly in the background. The names
//! come from the same [`Repodata`] gateway builds solve with, which lists them without parsing
//! a record; the latest version of the (at most [`MAX_CONDA_HITS`]) hits of a search is read
//! from the gateway when the search asks, so only the records of names someone looked at are
//! ever parsed. Names are kept sorted, so prefix matches are a binary search; substring
//! matches are a linear scan, done only when the prefix matches do not already fill the
//! answer. The pip side cannot be listed (PyPI has no usable search), so only the typed name
//! is looked up, with the PEP 691 JSON Simple API, and remembered for a few minutes.
//!
//! Depends on `config` and `resolve` (for where channels are read from); the `api` module
//! serves it at `/api/v1/search`.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use url::Url;

use rattler_conda_types::{MatchSpec, PackageName, Subdir};

use crate::config::Config;
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

/// How long a pip index answer is reused.
const PYPI_TTL: Duration = Duration::from_secs(600);

/// How long a failed pip index lookup is remembered, so an unreachable index does not slow
/// every keystroke, yet comes back soon.
const PYPI_FAILURE_TTL: Duration = Duration::from_secs(30);

/// How long a pip index lookup may take before the search answers without it.
const PYPI_TIMEOUT: Duration = Duration::from_secs(5);

/// Remembered pip lookups beyond which expired ones are dropped, to bound memory.
const PYPI_CACHE_LIMIT: usize = 10_000;

/// The pip index used when `build.pip_index_url` is not set.
const DEFAULT_PIP_INDEX: &str = "https://pypi.org/simple/";

/// PEP 691's JSON media type, preferred; HTML (PEP 503) is understood for indexes without it.
const SIMPLE_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, text/html;q=0.1";

/// What a search answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SearchResults {
    /// Conda packages whose name starts with (first) or contains the query.
    pub conda: Vec<CondaHit>,
    /// The pip project named exactly like the query, when the index has it.
    pub pypi: Vec<PypiHit>,
}

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

/// A project on the pip index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PypiHit {
    /// The normalized project name.
    pub name: String,
    /// The newest final release that is not yanked (what `pip install` picks), or the newest
    /// version when there is none.
    pub version: String,
    /// Every version, newest first by PEP 440.
    pub versions: Vec<String>,
    /// Always null: the Simple API has no summaries, and fetching each project's metadata
    /// would cost a request per keystroke.
    pub summary: Option<String>,
}

/// The package name in what the user typed, which may be a whole entry
/// (`bioconda::samtools=1.21`, `pip:requests==2.32.3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The name as typed, lowercased (conda names are lowercase); empty when there is none.
    pub conda: String,
    /// The name normalized per PEP 503, when it is a valid project name.
    pub pypi: Option<String>,
}

impl Query {
    /// Finds the name part: strips `pip:`, a channel (`x::`), and everything from the first
    /// version or extras delimiter.
    pub fn parse(text: &str) -> Query {
        let text = text.trim();
        let text = text
            .strip_prefix("pip::")
            .or_else(|| text.strip_prefix("pip:"))
            .unwrap_or(text);
        let text = text.rsplit_once("::").map_or(text, |(_, name)| name);
        let end = text
            .find(|c: char| "=<>!~[ ;".contains(c))
            .unwrap_or(text.len());
        let name = text[..end].trim();
        Query {
            conda: name.to_lowercase(),
            pypi: normalize_pypi_name(name),
        }
    }
}

/// A project name normalized per PEP 503 (lowercase, runs of `-_.` as one `-`), or `None`
/// when it is not a valid PEP 508 name (so nothing odd reaches the index URL).
pub fn normalize_pypi_name(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return None;
    }
    let mut normalized = String::with_capacity(name.len());
    let mut separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            separator = true;
        } else {
            if separator {
                normalized.push('-');
                separator = false;
            }
            normalized.push(c.to_ascii_lowercase());
        }
    }
    Some(normalized)
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

/// Answers searches: the conda index, kept fresh in the background, and pip index lookups.
/// Cheap to clone; the background refresh stops once every clone is dropped.
#[derive(Clone)]
pub struct PackageIndex {
    inner: Arc<Inner>,
}

impl fmt::Debug for PackageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackageIndex")
            .field("channels", &self.inner.channels)
            .field("pip_index", &self.inner.pip_index)
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    /// The repodata builds read too: names, and versions of hits.
    repodata: Repodata,
    /// The subdirs of each channel that the current index has names of.
    subdirs: Mutex<HashMap<String, Vec<Subdir>>>,
    /// Channel name → where it is read from (or why its mirror is not a URL), in priority
    /// order.
    channels: Vec<(String, Result<Url, String>)>,
    /// `None` when the configured index is not a URL: pip lookups are then skipped.
    pip_index: Option<Url>,
    /// The published index; searches read it without waiting.
    loaded: watch::Sender<Loaded>,
    /// Set once the background refresh has been started.
    started: AtomicBool,
    /// The last good `channeldata.json` of every channel, with its ETag, to revalidate, and to
    /// fall back on when a refresh cannot download it.
    files: Mutex<HashMap<Url, CachedFile>>,
    /// Recent pip index answers by normalized name.
    pypi: Mutex<HashMap<String, CachedLookup>>,
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

#[derive(Debug)]
struct CachedLookup {
    expires: Instant,
    hit: Option<PypiHit>,
}

/// Locks a cache; a panic elsewhere while holding it leaves nothing half-written that matters.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PackageIndex {
    /// The configured channels, read through `repodata` (the builds' own, so through the
    /// same mirrors and the same memory), and pip index. Nothing is downloaded until the first
    /// search.
    pub fn from_config(
        config: &Config,
        repodata: Repodata,
    ) -> Result<PackageIndex, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let channels = config
            .channels
            .iter()
            .map(|channel| {
                let name = channel.to_string();
                let url = repodata.channel_url(&name).map_err(|err| err.to_string());
                (name, url)
            })
            .collect();
        let pip_index = config
            .build
            .pip_index_url
            .as_deref()
            .unwrap_or(DEFAULT_PIP_INDEX);
        let pip_index = match Url::parse(&with_slash(pip_index)) {
            Ok(url) => Some(url),
            Err(err) => {
                tracing::warn!(url = pip_index, error = %err, "the pip index is not a URL; search will not look up pip packages");
                None
            }
        };
        Ok(PackageIndex::new(http, repodata, channels, pip_index))
    }

    /// An index of `channels` (name, base URL; highest priority first) with its repodata
    /// cached under `cache_dir`, and a pip index.
    pub fn with_sources(
        http: reqwest::Client,
        channels: Vec<(String, Url)>,
        pip_index: Option<Url>,
        cache_dir: std::path::PathBuf,
    ) -> PackageIndex {
        let mirrors = channels
            .iter()
            .map(|(name, url)| (name.clone(), url.to_string()))
            .collect();
        let repodata = Repodata::new(http.clone(), cache_dir, mirrors);
        let channels = channels
            .into_iter()
            .map(|(name, url)| {
                (
                    name,
                    Ok(Url::parse(&with_slash(url.as_str())).unwrap_or(url)),
                )
            })
            .collect();
        let pip_index = pip_index.map(|url| Url::parse(&with_slash(url.as_str())).unwrap_or(url));
        PackageIndex::new(http, repodata, channels, pip_index)
    }

    fn new(
        http: reqwest::Client,
        repodata: Repodata,
        channels: Vec<(String, Result<Url, String>)>,
        pip_index: Option<Url>,
    ) -> PackageIndex {
        PackageIndex {
            inner: Arc::new(Inner {
                http,
                repodata,
                subdirs: Mutex::new(HashMap::new()),
                channels,
                pip_index,
                loaded: watch::Sender::new(Loaded::default()),
                started: AtomicBool::new(false),
                files: Mutex::new(HashMap::new()),
                pypi: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Searches both sides at once. Never fails: what cannot be reached is left out (and
    /// logged), since an autocomplete error helps nobody.
    pub async fn search(&self, text: &str) -> SearchResults {
        let query = Query::parse(text);
        if query.conda.is_empty() {
            return SearchResults::default();
        }
        let (conda, pypi) = tokio::join!(self.search_conda(&query.conda), async {
            match &query.pypi {
                Some(name) => self.lookup_pypi(name).await.into_iter().collect(),
                None => Vec::new(),
            }
        });
        SearchResults { conda, pypi }
    }

    /// Conda hits for a lowercase name. Only the very first search can wait (for the first
    /// load, at most [`FIRST_LOAD_WAIT`]).
    pub async fn search_conda(&self, name: &str) -> Vec<CondaHit> {
        let Some(index) = self.current().await else {
            return Vec::new();
        };
        let mut hits = index.search(name, MAX_CONDA_HITS);
        self.inner.fill_versions(&mut hits).await;
        hits
    }

    /// The current conda index, starting the background load on first use.
    pub async fn current(&self) -> Option<Arc<CondaIndex>> {
        self.start();
        let mut loaded = self.inner.loaded.subscribe();
        let first = tokio::time::timeout(FIRST_LOAD_WAIT, loaded.wait_for(|l| l.attempted)).await;
        if first.is_err() {
            tracing::debug!("the conda package index is still loading; answering without it");
        }
        self.inner.loaded.borrow().index.clone()
    }

    /// Downloads (or revalidates) everything now and publishes the new index. True when every
    /// repodata was read. The background refresh calls this; tests and benchmarks may too.
    pub async fn refresh(&self) -> bool {
        self.inner.refresh().await
    }

    fn start(&self) {
        if !self.inner.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(keep_fresh(Arc::downgrade(&self.inner)));
        }
    }

    /// The pip project named `name` (normalized), from memory when looked up recently.
    pub async fn lookup_pypi(&self, name: &str) -> Option<PypiHit> {
        let index = self.inner.pip_index.as_ref()?;
        let now = Instant::now();
        if let Some(cached) = lock(&self.inner.pypi).get(name)
            && cached.expires > now
        {
            return cached.hit.clone();
        }
        let (hit, ttl) = match self.inner.fetch_pypi(index, name).await {
            Ok(hit) => (hit, PYPI_TTL),
            Err(reason) => {
                tracing::warn!(project = name, index = %index, %reason, "the pip index lookup failed");
                (None, PYPI_FAILURE_TTL)
            }
        };
        let mut cache = lock(&self.inner.pypi);
        if cache.len() >= PYPI_CACHE_LIMIT {
            cache.retain(|_, cached| cached.expires > now);
            if cache.len() >= PYPI_CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(
            name.to_owned(),
            CachedLookup {
                expires: Instant::now() + ttl,
                hit: hit.clone(),
            },
        );
        hit
    }
}

/// Refreshes hourly for as long as the index is in use. A load that missed some repodata is
/// retried sooner, with a growing delay.
async fn keep_fresh(inner: Weak<Inner>) {
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

impl Inner {
    async fn refresh(&self) -> bool {
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

    /// `GET <index>/<name>/`: `Ok(None)` when the index does not have the project.
    async fn fetch_pypi(&self, index: &Url, name: &str) -> Result<Option<PypiHit>, String> {
        let url = index
            .join(&format!("{name}/"))
            .map_err(|err| err.to_string())?;
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, SIMPLE_ACCEPT)
            .timeout(PYPI_TIMEOUT)
            .send()
            .await
            .map_err(|err| crate::error_chain(&err))?;
        match response.status().as_u16() {
            404 => return Ok(None),
            200 => {}
            status => return Err(format!("answered HTTP {status}")),
        }
        let html = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.contains("html"));
        let body = response
            .bytes()
            .await
            .map_err(|err| crate::error_chain(&err))?;
        let project = if html {
            SimpleProject {
                name: None,
                files: html_files(&String::from_utf8_lossy(&body)),
                versions: None,
            }
        } else {
            serde_json::from_slice(&body).map_err(|err| format!("not a PEP 691 answer: {err}"))?
        };
        Ok(project.hit(name))
    }
}

/// `text` ending in `/`, so joining a relative path appends to it.
fn with_slash(text: &str) -> String {
    if text.ends_with('/') {
        text.to_owned()
    } else {
        format!("{text}/")
    }
}

/// A PEP 691 project page, the parts search reads.
#[derive(Debug, Default, Deserialize)]
struct SimpleProject {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    files: Vec<SimpleFile>,
    /// Since API version 1.1.
    #[serde(default)]
    versions: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct SimpleFile {
    filename: String,
    /// `false`, `true`, or the reason as a string.
    #[serde(default)]
    yanked: serde_json::Value,
}

impl SimpleFile {
    fn yanked(&self) -> bool {
        !matches!(
            self.yanked,
            serde_json::Value::Null | serde_json::Value::Bool(false)
        )
    }
}

impl SimpleProject {
    /// Its versions, newest first; `None` when it has none.
    fn hit(self, normalized: &str) -> Option<PypiHit> {
        use pep508_rs::pep440_rs::Version;
        let name = self
            .name
            .as_deref()
            .and_then(normalize_pypi_name)
            .unwrap_or_else(|| normalized.to_owned());
        // Versions with only yanked files are listed, but not offered as the one to pick.
        let mut yanked: HashMap<Version, bool> = HashMap::new();
        let mut from_files = Vec::new();
        for file in &self.files {
            if let Some(text) = version_from_filename(&name, &file.filename)
                && let Ok(version) = Version::from_str(text)
            {
                *yanked.entry(version.clone()).or_insert(true) &= file.yanked();
                from_files.push((text.to_owned(), version));
            }
        }
        let mut versions: Vec<(String, Version)> = match self.versions {
            Some(texts) => texts
                .into_iter()
                .filter_map(|text| Version::from_str(&text).ok().map(|v| (text, v)))
                .collect(),
            None => from_files,
        };
        versions.sort_by(|a, b| b.1.cmp(&a.1));
        versions.dedup_by(|a, b| a.1 == b.1);
        let usable = |v: &Version| !yanked.get(v).copied().unwrap_or(false);
        let latest = versions
            .iter()
            .find(|(_, v)| !v.any_prerelease() && usable(v))
            .or_else(|| versions.iter().find(|(_, v)| usable(v)))
            .or_else(|| versions.first())?
            .0
            .clone();
        Some(PypiHit {
            name,
            version: latest,
            versions: versions.into_iter().map(|(text, _)| text).collect(),
            summary: None,
        })
    }
}

/// The version in a distribution's file name (`requests-2.32.3-py3-none-any.whl`,
/// `requests-2.32.3.tar.gz`), found by matching the project name, which may be spelled with
/// other separators or case.
fn version_from_filename<'a>(project: &str, filename: &'a str) -> Option<&'a str> {
    let (stem, wheel_like) = match filename
        .strip_suffix(".whl")
        .or_else(|| filename.strip_suffix(".egg"))
    {
        Some(stem) => (stem, true),
        None => (
            [".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz", ".tar"]
                .iter()
                .find_map(|ext| filename.strip_suffix(ext))?,
            false,
        ),
    };
    stem.match_indices('-').find_map(|(at, _)| {
        if normalize_pypi_name(&stem[..at]).as_deref() != Some(project) {
            return None;
        }
        let rest = &stem[at + 1..];
        let version = if wheel_like {
            rest.split('-').next()?
        } else {
            rest
        };
        (!version.is_empty()).then_some(version)
    })
}

/// The files of a PEP 503 HTML project page: each link's text, and whether it is yanked.
fn html_files(html: &str) -> Vec<SimpleFile> {
    let mut files = Vec::new();
    let mut rest = html;
    while let Some(open) = rest.find("<a ") {
        let Some(tag_len) = rest[open..].find('>') else {
            break;
        };
        let tag = &rest[open..open + tag_len];
        let after = &rest[open + tag_len + 1..];
        let Some(close) = after.find("</a>") else {
            break;
        };
        files.push(SimpleFile {
            filename: after[..close].trim().to_owned(),
            yanked: serde_json::Value::Bool(tag.contains("data-yanked")),
        });
        rest = &after[close..];
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repodata(records: &[(&str, &str)]) -> Vec<u8> {
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

    fn names(hits: &[CondaHit]) -> Vec<&str> {
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

    #[test]
    fn queries_are_reduced_to_the_name() {
        let cases = [
            ("pip:requests==2.32.3", "requests", Some("requests")),
            ("bioconda::samtools=1.21", "samtools", Some("samtools")),
            ("  samtools  ", "samtools", Some("samtools")),
            ("samtools 1.21", "samtools", Some("samtools")),
            (
                "pip:Flask_SQLAlchemy[async]>=3",
                "flask_sqlalchemy",
                Some("flask-sqlalchemy"),
            ),
            ("pip::six", "six", Some("six")),
            ("conda-forge/label/x::numpy<2", "numpy", Some("numpy")),
            (
                "pip:requests ; python_version>'3'",
                "requests",
                Some("requests"),
            ),
            ("r-base!=4", "r-base", Some("r-base")),
            ("scipy~=1.1", "scipy", Some("scipy")),
            ("_libgcc_mutex", "_libgcc_mutex", None),
            ("", "", None),
            ("   ", "", None),
            ("==1.0", "", None),
        ];
        for (text, conda, pypi) in cases {
            let query = Query::parse(text);
            assert_eq!(query.conda, conda, "{text}");
            assert_eq!(query.pypi.as_deref(), pypi, "{text}");
        }
    }

    #[test]
    fn pypi_names_are_normalized_per_pep_503() {
        assert_eq!(
            normalize_pypi_name("Foo.Bar__baz").as_deref(),
            Some("foo-bar-baz")
        );
        assert_eq!(normalize_pypi_name("a"), Some("a".to_owned()));
        for bad in ["", "-a", "a-", "a/b", "a b", "../x", "é"] {
            assert_eq!(normalize_pypi_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn versions_are_read_from_file_names() {
        let cases = [
            ("requests-2.32.3-py3-none-any.whl", Some("2.32.3")),
            ("requests-2.32.3.tar.gz", Some("2.32.3")),
            ("Requests-0.2.0.tar.gz", Some("0.2.0")),
            ("zope_interface-6.0-cp312-cp312-manylinux.whl", None),
            ("requests-2.0.zip", Some("2.0")),
            ("requests-2.0.exe", None),
            ("requests.tar.gz", None),
        ];
        for (filename, version) in cases {
            assert_eq!(
                version_from_filename("requests", filename),
                version,
                "{filename}"
            );
        }
        assert_eq!(
            version_from_filename("zope-interface", "zope.interface-6.0.tar.gz"),
            Some("6.0")
        );
        assert_eq!(
            version_from_filename("zope-interface", "zope_interface-6.0-cp312-none-any.whl"),
            Some("6.0")
        );
    }

    #[test]
    fn pypi_versions_are_newest_first_and_the_latest_is_a_usable_release() {
        let project: SimpleProject = serde_json::from_value(serde_json::json!({
            "name": "Requests",
            "files": [
                {"filename": "requests-2.9.0.tar.gz", "yanked": false},
                {"filename": "requests-2.10.0-py3-none-any.whl", "yanked": false},
                {"filename": "requests-2.11.0.tar.gz", "yanked": "broken"},
                {"filename": "requests-3.0.0rc1.tar.gz"},
                {"filename": "requests-2.10.0.tar.gz"},
            ],
        }))
        .unwrap();
        let hit = project.hit("requests").unwrap();
        assert_eq!(hit.name, "requests");
        assert_eq!(hit.versions, ["3.0.0rc1", "2.11.0", "2.10.0", "2.9.0"]);
        assert_eq!(hit.version, "2.10.0");

        let listed: SimpleProject = serde_json::from_value(serde_json::json!({
            "name": "x", "files": [], "versions": ["1.0", "1.10", "1.2", "bogus", "2.0.dev1"],
        }))
        .unwrap();
        let hit = listed.hit("x").unwrap();
        assert_eq!(hit.versions, ["2.0.dev1", "1.10", "1.2", "1.0"]);
        assert_eq!(hit.version, "1.10");

        assert_eq!(SimpleProject::default().hit("x"), None);
    }

    #[test]
    fn html_project_pages_are_understood() {
        let files = html_files(
            r#"<html><body><a href="../../p/x-1.0.tar.gz#sha256=00">x-1.0.tar.gz</a><br/>
            <a href="x-1.1.tar.gz" data-yanked="">x-1.1.tar.gz</a></body></html>"#,
        );
        let names: Vec<(&str, bool)> = files
            .iter()
            .map(|f| (f.filename.as_str(), f.yanked()))
            .collect();
        assert_eq!(names, [("x-1.0.tar.gz", false), ("x-1.1.tar.gz", true)]);
    }

    /// A channel and a pip index on 127.0.0.1 that count requests and honour ETags.
    struct Served {
        url: Url,
        gets: Arc<std::sync::atomic::AtomicUsize>,
        not_modified: Arc<std::sync::atomic::AtomicUsize>,
    }

    async fn serve() -> Served {
        use axum::http::{HeaderMap, StatusCode, Uri, header};
        use axum::response::IntoResponse as _;
        let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let not_modified = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (g, n) = (gets.clone(), not_modified.clone());
        let linux = repodata(&[("kiln-hello", "1.0"), ("kiln-hello", "2.0"), ("hello", "1")]);
        let noarch = repodata(&[("kiln-pyhello", "1.0")]);
        let router = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let (g, n) = (g.clone(), n.clone());
            let (linux, noarch) = (linux.clone(), noarch.clone());
            async move {
                g.fetch_add(1, Ordering::SeqCst);
                let body = match uri.path() {
                    "/chan/linux-64/repodata.json" => linux,
                    "/chan/noarch/repodata.json" => noarch,
                    "/chan/channeldata.json" => {
                        br#"{"packages": {"kiln-hello": {"summary": "Says hello"}}}"#.to_vec()
                    }
                    "/simple/requests/" => {
                        return (
                            [(header::CONTENT_TYPE, "application/vnd.pypi.simple.v1+json")],
                            r#"{"meta": {"api-version": "1.1"}, "name": "requests",
                               "files": [], "versions": ["2.32.2", "2.32.3"]}"#,
                        )
                            .into_response();
                    }
                    _ => return StatusCode::NOT_FOUND.into_response(),
                };
                let etag = format!("\"{}\"", body.len());
                if headers
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|v| v.as_bytes() == etag.as_bytes())
                {
                    n.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::NOT_MODIFIED.into_response();
                }
                ([(header::ETAG, etag)], body).into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Served {
            url: Url::parse(&format!("http://{address}/")).unwrap(),
            gets,
            not_modified,
        }
    }

    #[tokio::test]
    async fn the_index_loads_on_first_search_and_revalidates_with_etags() {
        let served = serve().await;
        let cache = tempfile::tempdir().unwrap();
        let index = PackageIndex::with_sources(
            reqwest::Client::new(),
            vec![("chan".to_owned(), served.url.join("chan").unwrap())],
            Some(served.url.join("simple").unwrap()),
            cache.path().to_owned(),
        );
        let results = index.search("kiln-he").await;
        assert_eq!(
            results.conda,
            [CondaHit {
                name: "kiln-hello".into(),
                channel: "chan".into(),
                version: "2.0".into(),
                summary: Some("Says hello".into()),
            }]
        );
        assert!(results.pypi.is_empty());
        assert_eq!(
            names(&index.search("hello").await.conda),
            ["hello", "kiln-hello", "kiln-pyhello"]
        );

        // The repodata is still in the gateway's memory (younger than its maximum age); only
        // channeldata is revalidated.
        let before = served.gets.load(Ordering::SeqCst);
        assert!(index.refresh().await);
        assert_eq!(served.not_modified.load(Ordering::SeqCst), 1);
        assert_eq!(served.gets.load(Ordering::SeqCst), before + 1);
        assert_eq!(index.search("kiln-he").await.conda.len(), 1);

        let before = served.gets.load(Ordering::SeqCst);
        let pypi = index.search("pip:requests==2.32.3").await.pypi;
        assert_eq!(
            pypi,
            [PypiHit {
                name: "requests".into(),
                version: "2.32.3".into(),
                versions: vec!["2.32.3".into(), "2.32.2".into()],
                summary: None,
            }]
        );
        assert_eq!(index.search("requests").await.pypi, pypi, "cached");
        // Only the first lookup reached the pip index; the conda side never asks the network.
        assert_eq!(served.gets.load(Ordering::SeqCst), before + 1);
        assert_eq!(index.search("   ").await, SearchResults::default());
    }

    #[tokio::test]
    async fn an_unreachable_channel_gives_no_conda_hits_rather_than_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/chan/", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let cache = tempfile::tempdir().unwrap();
        let index = PackageIndex::with_sources(
            reqwest::Client::new(),
            vec![("chan".into(), url)],
            None,
            cache.path().to_owned(),
        );
        let results = index.search("samtools").await;
        assert_eq!(results, SearchResults::default());
        assert!(!index.refresh().await);
    }
}
