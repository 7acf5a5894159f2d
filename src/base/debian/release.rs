//! A suite's `InRelease`: the clear-signed `Release` file whose `SHA256` list vouches for every
//! index of the suite. The signature is what makes a plain-HTTP mirror safe, so nothing is read
//! from the file unless a trusted key signed it, and only the signed text is read.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pgp::composed::CleartextSignedMessage;

use super::deb822;
use super::error::DebianError;
use super::keyring::Keyring;

/// The largest `InRelease` accepted (bookworm's is 151 KB, listing every component's indices).
pub const MAX_IN_RELEASE_BYTES: u64 = 4 << 20;

/// The fields of a verified `Release` that kiln uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `Suite` (`oldstable`, `stable`, …).
    pub suite: String,
    /// `Codename` (`bookworm`, …).
    pub codename: String,
    /// `Date`: when the archive made this Release.
    pub date: DateTime<Utc>,
    /// `Valid-Until`, if set (security and updates suites set it; main does not).
    pub valid_until: Option<DateTime<Utc>>,
    /// `Architectures`.
    pub architectures: Vec<String>,
    /// `Acquire-By-Hash: yes`: indices are also served under `by-hash/SHA256/<sha256>`, which
    /// stay consistent while the mirror updates.
    pub acquire_by_hash: bool,
    /// `SHA256`: the sha256 (lowercase hex) and size of each index, by path under the suite.
    sha256: BTreeMap<String, (String, u64)>,
}

impl Release {
    /// The sha256 and size the Release gives for `path` (e.g. `main/binary-amd64/Packages.xz`).
    pub fn file(&self, path: &str) -> Option<(&str, u64)> {
        self.sha256
            .get(path)
            .map(|(sha256, size)| (sha256.as_str(), *size))
    }

    /// Whether the Release names `suite`, as its `Suite` or its `Codename`.
    pub fn is_of(&self, suite: &str) -> bool {
        self.suite == suite || self.codename == suite
    }
}

/// Verifies `bytes`, an `InRelease` downloaded from `url`, and reads its signed text. It passes
/// when at least one signature verifies against a key of `keyring` (a primary key or one of its
/// bound subkeys); signatures by other keys are ignored, as apt does (Debian signs with the
/// current and the next release's keys). A `Valid-Until` in the past is refused.
pub fn verify_in_release(
    bytes: &[u8],
    keyring: &Keyring,
    url: &str,
) -> Result<Release, DebianError> {
    verify_in_release_at(bytes, keyring, url, Utc::now())
}

fn verify_in_release_at(
    bytes: &[u8],
    keyring: &Keyring,
    url: &str,
    now: DateTime<Utc>,
) -> Result<Release, DebianError> {
    let bad = |reason: String| DebianError::BadSignature {
        url: url.to_owned(),
        reason,
    };
    if bytes.len() as u64 > MAX_IN_RELEASE_BYTES {
        return Err(DebianError::TooLarge {
            url: url.to_owned(),
            limit: MAX_IN_RELEASE_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| bad("it is not UTF-8 text".into()))?;
    let (message, _) = CleartextSignedMessage::from_string(text)
        .map_err(|err| bad(format!("it is not a clear-signed document: {err}")))?;
    let signed = message.signed_text();
    let verified = message.signatures().iter().any(|signature| {
        keyring.keys().iter().any(|key| {
            signature.verify(&key.primary, signed.as_bytes()).is_ok()
                || key
                    .subkeys
                    .iter()
                    .any(|subkey| signature.verify(subkey, signed.as_bytes()).is_ok())
        })
    });
    if !verified {
        let signers: Vec<String> = message
            .signatures()
            .iter()
            .flat_map(|signature| {
                let fingerprints: Vec<String> = signature
                    .issuer_fingerprint()
                    .iter()
                    .map(|f| format!("{f:X}"))
                    .collect();
                if fingerprints.is_empty() {
                    signature
                        .issuer_key_id()
                        .iter()
                        .map(hex::encode_upper)
                        .collect()
                } else {
                    fingerprints
                }
            })
            .collect();
        return Err(bad(if signers.is_empty() {
            "it carries no signature".into()
        } else {
            format!(
                "no signature (by {}) verifies against a trusted key",
                signers.join(", ")
            )
        }));
    }
    // The signed text as hashed has CRLF line ends; the fields are read with LF.
    let release =
        parse_release(&signed.replace("\r\n", "\n")).map_err(|reason| DebianError::Malformed {
            what: url.to_owned(),
            reason,
        })?;
    if let Some(valid_until) = release.valid_until
        && valid_until < now
    {
        return Err(DebianError::Expired {
            url: url.to_owned(),
            valid_until: valid_until.to_rfc2822(),
        });
    }
    Ok(release)
}

/// Reads the first paragraph of a `Release` file.
fn parse_release(text: &str) -> Result<Release, String> {
    let paragraph = deb822::paragraphs(text)
        .next()
        .ok_or("the signed text is empty")?;
    let mut suite = String::new();
    let mut codename = String::new();
    let mut date = None;
    let mut valid_until = None;
    let mut architectures = Vec::new();
    let mut acquire_by_hash = false;
    let mut sha256 = BTreeMap::new();
    for (name, value) in deb822::fields(paragraph.text)? {
        let field = |wanted: &str| name.eq_ignore_ascii_case(wanted);
        if field("Suite") {
            value.trim().clone_into(&mut suite);
        } else if field("Codename") {
            value.trim().clone_into(&mut codename);
        } else if field("Date") {
            date = Some(parse_date(value.trim()).map_err(|e| format!("Date: {e}"))?);
        } else if field("Valid-Until") {
            valid_until = Some(parse_date(value.trim()).map_err(|e| format!("Valid-Until: {e}"))?);
        } else if field("Architectures") {
            architectures = value.split_whitespace().map(str::to_owned).collect();
        } else if field("Acquire-By-Hash") {
            acquire_by_hash = value.trim().eq_ignore_ascii_case("yes");
        } else if field("SHA256") {
            for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let parts: Vec<&str> = line.split_whitespace().collect();
                let [hash, size, path] = parts[..] else {
                    return Err(format!("SHA256 line `{line}` is not `sha256 size path`"));
                };
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("SHA256 line `{line}` has no sha256"));
                }
                let size = size
                    .parse::<u64>()
                    .map_err(|_| format!("SHA256 line `{line}` has no size"))?;
                sha256.insert(path.to_owned(), (hash.to_ascii_lowercase(), size));
            }
        }
    }
    if suite.is_empty() && codename.is_empty() {
        return Err("it has neither Suite nor Codename".into());
    }
    Ok(Release {
        suite,
        codename,
        date: date.ok_or("it has no Date")?,
        valid_until,
        architectures,
        acquire_by_hash,
        sha256,
    })
}

/// A Release date: RFC 2822 (`Sat, 11 Jul 2026 10:16:37 UTC`), where Debian writes `UTC`.
fn parse_date(value: &str) -> Result<DateTime<Utc>, String> {
    let normalized = match value.strip_suffix(" UTC") {
        Some(rest) => format!("{rest} +0000"),
        None => value.to_owned(),
    };
    DateTime::parse_from_rfc2822(&normalized)
        .map(|date| date.with_timezone(&Utc))
        .map_err(|err| format!("`{value}` is not a date ({err})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Release signed by a throwaway test key and by a second, unknown key.
    const IN_RELEASE: &str = include_str!("testdata/InRelease");
    /// The same Release with a `Valid-Until` in 2020, signed by the test key.
    const IN_RELEASE_EXPIRED: &str = include_str!("testdata/InRelease-expired");
    /// The same Release signed by the unknown key only.
    const IN_RELEASE_UNKNOWN_SIGNER: &str = include_str!("testdata/InRelease-unknown-signer");
    /// The test key's public key.
    const ARCHIVE_KEY: &str = include_str!("testdata/archive-key.asc");

    const URL: &str = "http://mirror.test/debian/dists/kiln/InRelease";

    fn test_keyring() -> Keyring {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("archive-key.asc");
        std::fs::write(&path, ARCHIVE_KEY).expect("write key");
        Keyring::load(&path).expect("test key loads")
    }

    #[test]
    fn verifies_and_reads_the_signed_release() {
        let release =
            verify_in_release(IN_RELEASE.as_bytes(), &test_keyring(), URL).expect("verifies");
        assert_eq!(release.suite, "testing");
        assert_eq!(release.codename, "kiln");
        assert!(release.is_of("kiln") && release.is_of("testing") && !release.is_of("bookworm"));
        assert_eq!(release.date.to_rfc3339(), "2026-07-11T10:16:37+00:00");
        assert_eq!(
            release.valid_until.map(|d| d.to_rfc3339()).as_deref(),
            Some("2100-01-01T00:00:00+00:00")
        );
        assert_eq!(release.architectures, ["amd64", "arm64"]);
        assert!(release.acquire_by_hash);
        assert_eq!(
            release.file("main/binary-amd64/Packages.xz"),
            Some((
                "5bd2c0c1e0b4a7b0c4c5d2a8c9f3d6e1f2a3b4c5d6e7f8091a2b3c4d5e6f7081",
                1234
            ))
        );
        assert_eq!(
            release.file("main/binary-arm64/Packages.xz").map(|f| f.0),
            Some("a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8e9f")
        );
        // MD5Sum lines are not read as SHA256 ones.
        assert_eq!(
            release.file("main/binary-amd64/Packages").map(|f| f.1),
            Some(0)
        );
        assert!(release.file("main/binary-i386/Packages.xz").is_none());
    }

    #[test]
    fn refuses_a_release_no_trusted_key_signed() {
        let error = verify_in_release(IN_RELEASE_UNKNOWN_SIGNER.as_bytes(), &test_keyring(), URL)
            .expect_err("unknown signer");
        let message = error.to_string();
        assert!(
            matches!(error, DebianError::BadSignature { .. })
                && message.contains(URL)
                && message.contains("20890B15B68628A2CC34461D49CCA7D1E4BC3D25")
                && message.contains("debian_keyring"),
            "{message}"
        );
        // Debian's keys did not sign the test Release either.
        let error = verify_in_release(IN_RELEASE.as_bytes(), &Keyring::debian(), URL)
            .expect_err("not Debian's");
        assert!(matches!(error, DebianError::BadSignature { .. }), "{error}");
    }

    #[test]
    fn refuses_an_edited_release() {
        let edited = IN_RELEASE.replace(" 1234 main/binary-amd64", " 1235 main/binary-amd64");
        assert_ne!(edited, IN_RELEASE);
        let error = verify_in_release(edited.as_bytes(), &test_keyring(), URL)
            .expect_err("edited after signing");
        assert!(matches!(error, DebianError::BadSignature { .. }), "{error}");
        // Text added outside the signed part is not a clear-signed document any more.
        let prefixed = format!("Suite: bookworm\n{IN_RELEASE}");
        let error =
            verify_in_release(prefixed.as_bytes(), &test_keyring(), URL).expect_err("leading text");
        assert!(matches!(error, DebianError::BadSignature { .. }), "{error}");
        let error =
            verify_in_release(b"Suite: bookworm\n", &test_keyring(), URL).expect_err("not signed");
        assert!(
            error.to_string().contains("not a clear-signed document"),
            "{error}"
        );
    }

    #[test]
    fn refuses_an_expired_release() {
        let error = verify_in_release(IN_RELEASE_EXPIRED.as_bytes(), &test_keyring(), URL)
            .expect_err("expired in 2020");
        let message = error.to_string();
        assert!(
            matches!(error, DebianError::Expired { .. })
                && message.contains(URL)
                && message.contains("1 Jan 2020"),
            "{message}"
        );
        let before = DateTime::parse_from_rfc3339("2019-12-31T00:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        verify_in_release_at(IN_RELEASE_EXPIRED.as_bytes(), &test_keyring(), URL, before)
            .expect("valid before its Valid-Until");
    }

    #[test]
    fn refuses_oversized_input() {
        let big = vec![b'a'; MAX_IN_RELEASE_BYTES as usize + 1];
        let error = verify_in_release(&big, &test_keyring(), URL).expect_err("too big");
        assert!(matches!(error, DebianError::TooLarge { .. }), "{error}");
    }
}
