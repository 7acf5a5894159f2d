//! The pip side of search: an exact-name lookup on the pip index, remembered for a while.
//!
//! PyPI has no usable search, so only the typed name is looked up, with the PEP 691 JSON
//! Simple API (PEP 503 HTML pages are understood too), and the answer (or the failure) is
//! remembered for a few minutes, so autocomplete does not ask the index on every keystroke.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use url::Url;

use super::lock;
use crate::spec::normalize_project_name;

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
pub(super) const DEFAULT_PIP_INDEX: &str = "https://pypi.org/simple/";

/// PEP 691's JSON media type, preferred; HTML (PEP 503) is understood for indexes without it.
const SIMPLE_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, text/html;q=0.1";

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

/// Looks projects up on one pip index, remembering recent answers.
pub(super) struct PypiLookup {
    http: reqwest::Client,
    /// `None` when the configured index is not a URL: pip lookups are then skipped.
    pub(super) index: Option<Url>,
    /// Recent pip index answers by normalized name.
    cache: Mutex<HashMap<String, CachedLookup>>,
}

#[derive(Debug)]
struct CachedLookup {
    expires: Instant,
    hit: Option<PypiHit>,
}

impl PypiLookup {
    pub(super) fn new(http: reqwest::Client, index: Option<Url>) -> PypiLookup {
        PypiLookup {
            http,
            index,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The pip project named `name` (normalized), from memory when looked up recently.
    pub(super) async fn lookup(&self, name: &str) -> Option<PypiHit> {
        let index = self.index.as_ref()?;
        let now = Instant::now();
        if let Some(cached) = lock(&self.cache).get(name)
            && cached.expires > now
        {
            return cached.hit.clone();
        }
        let (hit, ttl) = match self.fetch(index, name).await {
            Ok(hit) => (hit, PYPI_TTL),
            Err(reason) => {
                tracing::warn!(project = name, index = %index, %reason, "the pip index lookup failed");
                (None, PYPI_FAILURE_TTL)
            }
        };
        let mut cache = lock(&self.cache);
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

    /// `GET <index>/<name>/`: `Ok(None)` when the index does not have the project.
    async fn fetch(&self, index: &Url, name: &str) -> Result<Option<PypiHit>, String> {
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
            .and_then(normalize_project_name)
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
        if normalize_project_name(&stem[..at]).as_deref() != Some(project) {
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
}
