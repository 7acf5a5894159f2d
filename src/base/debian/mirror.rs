//! A Debian mirror, read over HTTP(S) with the chain of trust apt uses: the signed `InRelease`
//! vouches for the `Packages` index, the index for every `.deb`. Each file is checked against
//! its sha256 and size before kiln keeps it, so a mirror (or anything between kiln and it) can
//! make a download fail but cannot change what kiln installs.
//!
//! Verified files are cached by sha256 under the cache directory (`indexes/<sha256>.xz`,
//! `debs/<sha256>.deb`), written to a temporary name and renamed, so concurrent kiln processes
//! share them safely. A cached file is hashed again before use.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use url::Url;

use super::error::DebianError;
use super::keyring::Keyring;
use super::packages::{PackageIndex, Stanza};
use super::release::{MAX_IN_RELEASE_BYTES, Release, verify_in_release};

/// How much kiln fetches from a mirror, and how long it waits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest `Packages.xz` (bookworm amd64: 8.8 MB).
    pub packages_xz_bytes: u64,
    /// The largest decompressed `Packages` (bookworm amd64: 50 MB).
    pub packages_bytes: u64,
    /// The largest single `.deb`.
    pub deb_bytes: u64,
    /// How many `.deb` files download at once.
    pub parallel_downloads: usize,
    /// How long to wait for a response's status and headers.
    pub response_timeout: Duration,
    /// How long a body may stall without a byte arriving.
    pub stall_timeout: Duration,
    /// How long one file may take in all.
    pub file_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            packages_xz_bytes: 64 << 20,
            packages_bytes: 512 << 20,
            deb_bytes: 1 << 30,
            parallel_downloads: 8,
            response_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            file_timeout: Duration::from_secs(15 * 60),
        }
    }
}

/// One suite of a Debian mirror (the `main` component).
#[derive(Debug, Clone)]
pub struct Mirror {
    http: reqwest::Client,
    url: Url,
    suite: String,
    keyring: Arc<Keyring>,
    cache_dir: PathBuf,
    limits: Limits,
}

/// What a download is checked against.
struct Expected<'a> {
    /// The signed document: `Release` or `Packages index`.
    signed_by: &'static str,
    size: u64,
    sha256: &'a str,
}

impl Mirror {
    /// The suite `suite` of the mirror at `url` (e.g. `http://deb.debian.org/debian`), trusted
    /// when signed by a key of `keyring`, with verified files cached under `cache_dir`. `http`
    /// is the caller's client (kiln's trusts the system's certificate store and proxies).
    pub fn new(
        http: reqwest::Client,
        url: Url,
        suite: &str,
        keyring: Keyring,
        cache_dir: PathBuf,
    ) -> Mirror {
        let mut url = url;
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Mirror {
            http,
            url,
            suite: suite.to_owned(),
            keyring: Arc::new(keyring),
            cache_dir,
            limits: Limits::default(),
        }
    }

    /// The same mirror with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Mirror {
        self.limits = limits;
        self
    }

    /// The mirror's URL (ending in `/`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The suite read.
    pub fn suite(&self) -> &str {
        &self.suite
    }

    /// Fetches and verifies the suite's `InRelease`.
    pub async fn release(&self) -> Result<Release, DebianError> {
        check_name(
            "suite",
            &self.suite,
            "; set `[base] debian_suite` to e.g. bookworm",
        )?;
        let url = self.join(&format!("dists/{}/InRelease", self.suite))?;
        let bytes = self.fetch_bytes(&url, MAX_IN_RELEASE_BYTES).await?;
        let keyring = Arc::clone(&self.keyring);
        let url_text = url.to_string();
        let release =
            blocking(move || verify_in_release(&bytes, &keyring, url_text.as_str())).await?;
        if !release.is_of(&self.suite) {
            return Err(DebianError::WrongSuite {
                url: url.to_string(),
                expected: self.suite.clone(),
                found: format!("{}/{}", release.suite, release.codename),
            });
        }
        Ok(release)
    }

    /// The `main` component's `Packages` index for `arch` (`amd64`, `arm64`), checked against
    /// the signed `Release`. The verified `Packages.xz` is cached by its sha256, so only the
    /// `InRelease` is downloaded again while the suite does not change.
    pub async fn packages(&self, arch: &str) -> Result<PackageIndex, DebianError> {
        let release = self.release().await?;
        self.packages_in(&release, arch).await
    }

    /// [`packages`](Self::packages) for a `Release` already fetched with
    /// [`release`](Self::release): the indices of several architectures then come from the
    /// same signed Release, even if the mirror updates in between.
    pub async fn packages_in(
        &self,
        release: &Release,
        arch: &str,
    ) -> Result<PackageIndex, DebianError> {
        check_name("architecture", arch, "")?;
        let file = format!("main/binary-{arch}/Packages.xz");
        let in_release = self.join(&format!("dists/{}/InRelease", self.suite))?;
        let (sha256, size) = release
            .file(&file)
            .ok_or_else(|| DebianError::NotInRelease {
                url: in_release.to_string(),
                file: file.clone(),
            })?;
        let sha256 = sha256.to_owned();
        let plain_url = self.join(&format!("dists/{}/{file}", self.suite))?;
        if size > self.limits.packages_xz_bytes {
            return Err(DebianError::TooLarge {
                url: plain_url.to_string(),
                limit: self.limits.packages_xz_bytes,
            });
        }
        let expected = Expected {
            signed_by: "Release",
            size,
            sha256: &sha256,
        };
        let cached = self.cache_dir.join("indexes").join(format!("{sha256}.xz"));
        if !is_cached(&cached, &expected).await? {
            let by_hash = release.acquire_by_hash.then(|| {
                self.join(&format!(
                    "dists/{}/main/binary-{arch}/by-hash/SHA256/{sha256}",
                    self.suite
                ))
            });
            let mut done = false;
            if let Some(by_hash) = by_hash {
                // A mirror mid-update may not have the by-hash file yet; the plain path is
                // checked against the same sha256.
                match self.download(&by_hash?, &expected, &cached).await {
                    Ok(()) => done = true,
                    Err(DebianError::Status { status, .. })
                        if status == reqwest::StatusCode::NOT_FOUND => {}
                    Err(err) => return Err(err),
                }
            }
            if !done {
                self.download(&plain_url, &expected, &cached).await?;
            }
        }
        let uncompressed = release
            .file(&format!("main/binary-{arch}/Packages"))
            .map(|(sha256, size)| (sha256.to_owned(), size));
        let limit = self.limits.packages_bytes;
        let url = plain_url.to_string();
        let suite = self.suite.clone();
        let arch = arch.to_owned();
        blocking(move || {
            let text = decompress(&cached, &url, limit, uncompressed.as_ref())?;
            Ok(PackageIndex::parse_owned(text)?.with_origin(&suite, &arch))
        })
        .await
    }

    /// Downloads each stanza's `.deb` (at most [`Limits::parallel_downloads`] at once) into
    /// `<cache>/debs/<sha256>.deb`, checked against the stanza's `Size` and `SHA256`, and
    /// returns the paths in the order of `stanzas`. Files already cached are hashed again and
    /// reused.
    pub async fn debs(&self, stanzas: &[Stanza]) -> Result<Vec<PathBuf>, DebianError> {
        // Collected in a loop rather than mapped with a closure: rustc cannot prove a future
        // made in a closure `Send` for every lifetime, which spawned builds need.
        let mut downloads = Vec::with_capacity(stanzas.len());
        for stanza in stanzas {
            downloads.push(self.deb(stanza));
        }
        futures_util::stream::iter(downloads)
            .buffered(self.limits.parallel_downloads.max(1))
            .try_collect()
            .await
    }

    async fn deb(&self, stanza: &Stanza) -> Result<PathBuf, DebianError> {
        let plain = !stanza.filename.starts_with('/')
            && stanza.filename.split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && !segment.contains(['\\', '?', '#'])
            });
        if !plain {
            return Err(DebianError::Invalid {
                what: "Filename",
                value: stanza.filename.clone(),
                hint: "; the Packages index names a file outside the mirror",
            });
        }
        let url = self.join(&stanza.filename)?;
        if stanza.size > self.limits.deb_bytes {
            return Err(DebianError::TooLarge {
                url: url.to_string(),
                limit: self.limits.deb_bytes,
            });
        }
        let expected = Expected {
            signed_by: "Packages index",
            size: stanza.size,
            sha256: &stanza.sha256,
        };
        let path = self
            .cache_dir
            .join("debs")
            .join(format!("{}.deb", stanza.sha256));
        if !is_cached(&path, &expected).await? {
            self.download(&url, &expected, &path).await?;
        }
        Ok(path)
    }

    fn join(&self, path: &str) -> Result<Url, DebianError> {
        self.url.join(path).map_err(|_| DebianError::Invalid {
            what: "path on the mirror",
            value: path.to_owned(),
            hint: "",
        })
    }

    /// Sends a GET and waits for the response head; errors name the URL.
    async fn get(&self, url: &Url) -> Result<reqwest::Response, DebianError> {
        let unreachable = |reason: String| DebianError::Unreachable {
            url: url.to_string(),
            reason,
        };
        let response = tokio::time::timeout(
            self.limits.response_timeout,
            self.http.get(url.clone()).send(),
        )
        .await
        .map_err(|_| {
            unreachable(format!(
                "no answer within {} s",
                self.limits.response_timeout.as_secs()
            ))
        })?
        .map_err(|err| unreachable(crate::error_chain(&err)))?;
        if !response.status().is_success() {
            return Err(DebianError::Status {
                url: url.to_string(),
                status: response.status(),
            });
        }
        Ok(response)
    }

    /// The next chunk of a body, waiting at most the stall timeout.
    async fn chunk(
        &self,
        url: &Url,
        response: &mut reqwest::Response,
    ) -> Result<Option<bytes::Bytes>, DebianError> {
        let unreachable = |reason: String| DebianError::Unreachable {
            url: url.to_string(),
            reason,
        };
        tokio::time::timeout(self.limits.stall_timeout, response.chunk())
            .await
            .map_err(|_| {
                unreachable(format!(
                    "the download stalled for {} s",
                    self.limits.stall_timeout.as_secs()
                ))
            })?
            .map_err(|err| unreachable(crate::error_chain(&err)))
    }

    /// A whole (small) body, refused past `limit` bytes.
    async fn fetch_bytes(&self, url: &Url, limit: u64) -> Result<Vec<u8>, DebianError> {
        let work = async {
            let mut response = self.get(url).await?;
            let mut bytes = Vec::new();
            while let Some(chunk) = self.chunk(url, &mut response).await? {
                if (bytes.len() + chunk.len()) as u64 > limit {
                    return Err(DebianError::TooLarge {
                        url: url.to_string(),
                        limit,
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(bytes)
        };
        self.within_file_timeout(url, work).await
    }

    /// Downloads `url` into `dest` if its bytes are what `expected` says: streamed into a
    /// temporary file next to `dest`, hashed on the way, stopped as soon as it is longer than
    /// expected, renamed into place only when size and sha256 match.
    async fn download(
        &self,
        url: &Url,
        expected: &Expected<'_>,
        dest: &Path,
    ) -> Result<(), DebianError> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(DebianError::io("creating", dir))?;
        let temp = dir.join(format!(".partial-{}", uuid::Uuid::new_v4()));
        let result = self
            .within_file_timeout(url, self.download_to(url, expected, &temp))
            .await;
        let result = match result {
            Ok(()) => tokio::fs::rename(&temp, dest)
                .await
                .map_err(DebianError::io("renaming into", dest)),
            Err(err) => Err(err),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }

    async fn download_to(
        &self,
        url: &Url,
        expected: &Expected<'_>,
        temp: &Path,
    ) -> Result<(), DebianError> {
        let mut response = self.get(url).await?;
        let mut file = tokio::fs::File::create(temp)
            .await
            .map_err(DebianError::io("creating", temp))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = self.chunk(url, &mut response).await? {
            size += chunk.len() as u64;
            if size > expected.size {
                return Err(mismatch(
                    url,
                    expected,
                    format!("more than {} bytes", expected.size),
                ));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(DebianError::io("writing", temp))?;
        }
        file.flush()
            .await
            .map_err(DebianError::io("writing", temp))?;
        let sha256 = hex::encode(hasher.finalize());
        if size != expected.size || sha256 != expected.sha256 {
            return Err(mismatch(
                url,
                expected,
                format!("{size} bytes with sha256 {sha256}"),
            ));
        }
        Ok(())
    }

    async fn within_file_timeout<T>(
        &self,
        url: &Url,
        work: impl Future<Output = Result<T, DebianError>>,
    ) -> Result<T, DebianError> {
        tokio::time::timeout(self.limits.file_timeout, work)
            .await
            .map_err(|_| DebianError::Unreachable {
                url: url.to_string(),
                reason: format!(
                    "the download took longer than {} s",
                    self.limits.file_timeout.as_secs()
                ),
            })?
    }
}

fn mismatch(url: &Url, expected: &Expected<'_>, actual: String) -> DebianError {
    DebianError::Mismatch {
        url: url.to_string(),
        signed_by: expected.signed_by,
        expected: format!("{} bytes with sha256 {}", expected.size, expected.sha256),
        actual,
    }
}

/// Whether `path` holds the expected bytes; a cached file that does not (a disk error, an
/// edit) is removed so it is downloaded again.
async fn is_cached(path: &Path, expected: &Expected<'_>) -> Result<bool, DebianError> {
    match tokio::fs::metadata(path).await {
        Ok(metadata) if metadata.len() == expected.size => {}
        Ok(_) => {
            let _ = tokio::fs::remove_file(path).await;
            return Ok(false);
        }
        Err(_) => return Ok(false),
    }
    let owned = path.to_owned();
    let sha256 = blocking(move || {
        let mut file = std::fs::File::open(&owned).map_err(DebianError::io("reading", &owned))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let read = file
                .read(&mut buffer)
                .map_err(DebianError::io("reading", &owned))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await?;
    if sha256 == expected.sha256 {
        return Ok(true);
    }
    let _ = tokio::fs::remove_file(path).await;
    Ok(false)
}

/// Decompresses a cached `Packages.xz` into text, refusing more than `limit` bytes and, when
/// the Release lists the uncompressed `Packages` too, anything but those exact bytes.
fn decompress(
    path: &Path,
    url: &str,
    limit: u64,
    uncompressed: Option<&(String, u64)>,
) -> Result<String, DebianError> {
    let file = std::fs::File::open(path).map_err(DebianError::io("reading", path))?;
    let limit = uncompressed.map_or(limit, |(_, size)| (*size).min(limit));
    let mut bytes = Vec::new();
    liblzma::read::XzDecoder::new(std::io::BufReader::new(file))
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| DebianError::Malformed {
            what: url.to_owned(),
            reason: format!("it does not decompress as xz: {err}"),
        })?;
    if bytes.len() as u64 > limit {
        return Err(DebianError::TooLarge {
            url: format!("{url} (decompressed)"),
            limit,
        });
    }
    if let Some((sha256, size)) = uncompressed {
        let actual = hex::encode(Sha256::digest(&bytes));
        if bytes.len() as u64 != *size || &actual != sha256 {
            return Err(DebianError::Mismatch {
                url: url.to_owned(),
                signed_by: "Release",
                expected: format!("{size} bytes with sha256 {sha256} once decompressed"),
                actual: format!(
                    "{} bytes with sha256 {actual} once decompressed",
                    bytes.len()
                ),
            });
        }
    }
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    })
}

/// Refuses a suite or architecture that is not a plain name (it becomes part of URLs).
fn check_name(what: &'static str, value: &str, hint: &'static str) -> Result<(), DebianError> {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !value.starts_with('.');
    if plain {
        Ok(())
    } else {
        Err(DebianError::Invalid {
            what,
            value: value.to_owned(),
            hint,
        })
    }
}

/// Runs CPU-bound work (signature checks, hashing, decompressing, parsing) off the runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DebianError> + Send + 'static,
) -> Result<T, DebianError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(err) => match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(cancelled) => Err(DebianError::Io {
                action: "finishing work on",
                path: PathBuf::from("the Debian index"),
                source: std::io::Error::other(cancelled),
            }),
        },
    }
}
