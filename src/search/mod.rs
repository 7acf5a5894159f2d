//! Package search for the web UI's autocomplete: conda names from the configured channels
//! ([`conda`]) and an exact-name lookup on the pip index ([`pypi`]), for the name in what the
//! user typed ([`query`]).
//!
//! Autocomplete asks on every keystroke, so a search must never wait on the network: the conda
//! side answers from an in-memory index refreshed in the background, the pip side from a
//! short-lived memory of recent lookups.
//!
//! Depends on `config` and `resolve` (for where channels are read from); the `api` module
//! serves it at `/api/v1/search`.

mod conda;
mod pypi;
mod query;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use url::Url;

use crate::config::Config;
use crate::resolve::Repodata;

pub use conda::{
    ChannelPackages, CondaHit, CondaIndex, MAX_CONDA_HITS, RepodataNames, SUBDIRS, Summaries,
};
pub use pypi::PypiHit;
pub use query::Query;

use conda::CondaSearch;
use pypi::{DEFAULT_PIP_INDEX, PypiLookup};

/// What a search answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SearchResults {
    /// Conda packages whose name starts with (first) or contains the query.
    pub conda: Vec<CondaHit>,
    /// The pip project named exactly like the query, when the index has it.
    pub pypi: Vec<PypiHit>,
}

/// Answers searches: the conda index, kept fresh in the background, and pip index lookups.
/// Cheap to clone; the background refresh stops once every clone is dropped.
#[derive(Clone)]
pub struct PackageIndex {
    conda: Arc<CondaSearch>,
    pypi: Arc<PypiLookup>,
}

impl fmt::Debug for PackageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackageIndex")
            .field("channels", &self.conda.channels)
            .field("pip_index", &self.pypi.index)
            .finish_non_exhaustive()
    }
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
            conda: Arc::new(CondaSearch::new(http.clone(), repodata, channels)),
            pypi: Arc::new(PypiLookup::new(http, pip_index)),
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

    /// Conda hits for a lowercase name. Only the very first search can wait for the first
    /// load.
    pub async fn search_conda(&self, name: &str) -> Vec<CondaHit> {
        self.conda.search(name).await
    }

    /// The current conda index, starting the background load on first use.
    pub async fn current(&self) -> Option<Arc<CondaIndex>> {
        self.conda.current().await
    }

    /// Downloads (or revalidates) everything now and publishes the new index. True when every
    /// repodata was read. The background refresh calls this; tests and benchmarks may too.
    pub async fn refresh(&self) -> bool {
        self.conda.refresh().await
    }

    /// The pip project named `name` (normalized), from memory when looked up recently.
    pub async fn lookup_pypi(&self, name: &str) -> Option<PypiHit> {
        self.pypi.lookup(name).await
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::conda::tests::{names, repodata};
    use super::*;

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
