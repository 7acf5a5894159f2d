//! Deterministic image names: the key of a request and the URI its image lives at.
//!
//! The key is a sha256 over everything that changes the image: the generated recipe and
//! environment texts, the platforms, the target repository and kiln's image-format version.
//! Nothing else goes in, so entry order, letter case, tokens and time change nothing.
//! The name follows Wave's "imageSuffix" strategy, so kiln's images look like Seqera
//! Containers' (`<registry>/library/bwa_salmon:0.7.15--<key16>`), though the hashes differ.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::entry::{PackageEntry, printable};
use super::platform::{Format, Platform};
use super::request::Request;

/// The version of the way kiln assembles images. Bump it when the same lock would give
/// different image bytes, so that old names are never reused for new contents.
pub const IMAGE_FORMAT_VERSION: u32 = 1;

/// Longest tag part taken from a version, as in Wave.
const MAX_TAG_LEN: usize = 80;
/// Longest repository name part taken from package names, as in Wave.
const MAX_NAME_LEN: usize = 255;
/// More packages than this and the name lists the first four and `pruned`.
const MAX_NAMED_PACKAGES: usize = 5;

/// The sha256 key of a request; its first 16 hex characters end every tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageKey(String);

/// What the key is computed from.
#[derive(Debug, Clone, Copy)]
pub struct KeyInputs<'a> {
    /// The generated Dockerfile (docker) or definition file (sif).
    pub recipe: &'a str,
    /// The generated conda environment file.
    pub environment: &'a str,
    /// Target platforms, canonical order.
    pub platforms: &'a [Platform],
    /// The repository the image is pushed under, e.g. `localhost:9090/library`.
    pub repository: &'a str,
}

impl ImageKey {
    /// Hashes the inputs, each field framed as `name U+001C value U+001E` so that no two
    /// different inputs can produce the same byte stream.
    pub fn compute(inputs: &KeyInputs<'_>) -> Self {
        let platforms: Vec<&str> = inputs.platforms.iter().map(|p| p.as_str()).collect();
        let fields = [
            ("format-version", IMAGE_FORMAT_VERSION.to_string()),
            ("recipe", inputs.recipe.to_owned()),
            ("environment", inputs.environment.to_owned()),
            ("platforms", platforms.join(",")),
            ("repository", inputs.repository.to_owned()),
        ];
        let mut hasher = Sha256::new();
        for (name, value) in &fields {
            hasher.update(name.as_bytes());
            hasher.update([0x1c]);
            hasher.update(value.as_bytes());
            hasher.update([0x1e]);
        }
        ImageKey(hex::encode(hasher.finalize()))
    }

    /// All 64 hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 16 hex characters, used in tags and build ids.
    pub fn short(&self) -> &str {
        &self.0[..16]
    }
}

impl fmt::Display for ImageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string that is not a 64-character lowercase hex key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an image key (64 lowercase hex characters)")]
pub struct ImageKeyError(String);

impl FromStr for ImageKey {
    type Err = ImageKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(ImageKey(s.to_owned()))
        } else {
            Err(ImageKeyError(printable(s)))
        }
    }
}

impl TryFrom<String> for ImageKey {
    type Error = ImageKeyError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<ImageKey> for String {
    fn from(key: ImageKey) -> Self {
        key.0
    }
}

/// A registry host as it appears in image names: `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegistryHost(String);

impl RegistryHost {
    /// `localhost:9090`: kiln's embedded registry on its default port.
    pub fn default_host() -> Self {
        RegistryHost("localhost:9090".to_owned())
    }

    /// The host and port.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registry host that is not `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a registry host; write host or host:port, e.g. registry.example.org:5000")]
pub struct RegistryHostError(String);

impl FromStr for RegistryHost {
    type Err = RegistryHostError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = || RegistryHostError(printable(s));
        let (host, port) = match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        };
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(refuse());
        }
        if let Some(port) = port
            && port.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Err(refuse());
        }
        Ok(RegistryHost(s.to_ascii_lowercase()))
    }
}

impl TryFrom<String> for RegistryHost {
    type Error = RegistryHostError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<RegistryHost> for String {
    fn from(host: RegistryHost) -> Self {
        host.0
    }
}

/// Where a build's image lives: `<registry>/<repository>:<tag>`, and whether it is pulled over
/// ORAS (`oras://`, a SIF made from a package request). Package requests resolve to
/// `<registry>/library/<names>:<tag>`, Dockerfiles to `<registry>/library/dockerfile:<key16>`,
/// definition files to their library container's repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageName {
    registry: RegistryHost,
    repository: String,
    tag: String,
    oras: bool,
}

impl ImageName {
    /// The repository every package image lives under, on `registry`. It is part of the key.
    pub fn namespace(registry: &RegistryHost) -> String {
        format!("{registry}/library")
    }

    /// Names the image of `request` with key `key`.
    pub fn new(registry: &RegistryHost, request: &Request, key: &ImageKey) -> Self {
        let repository = format!("library/{}", repository_suffix(request.entries()));
        let tag = match shared_version(request.entries()) {
            Some(version) if !normalise_tag(version).is_empty() => {
                format!("{}--{}", normalise_tag(version), key.short())
            }
            _ => key.short().to_owned(),
        };
        ImageName {
            registry: registry.clone(),
            repository,
            tag,
            oras: request.format() == Format::Sif,
        }
    }

    /// Names the image of a user's Dockerfile with key `key`: the tag is the key's start.
    pub fn dockerfile(registry: &RegistryHost, key: &ImageKey) -> Self {
        ImageName {
            registry: registry.clone(),
            repository: "library/dockerfile".to_owned(),
            tag: key.short().to_owned(),
            oras: false,
        }
    }

    /// Names a library container's image `repository:tag` on `registry`, as a definition
    /// file's build pushes it (a plain reference; clients know it by its library path).
    pub fn library(registry: &RegistryHost, repository: &str, tag: &str) -> Self {
        ImageName {
            registry: registry.clone(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            oras: false,
        }
    }

    /// The registry host.
    pub fn registry(&self) -> &RegistryHost {
        &self.registry
    }

    /// The repository path inside the registry, e.g. `library/samtools`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, e.g. `1.21--0123456789abcdef`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The reference without a scheme: `host/repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}/{}:{}", self.registry, self.repository, self.tag)
    }

    /// The reference without a scheme or tag: `host/repository`.
    pub fn without_tag(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for ImageName {
    /// The URI users pull: a plain reference, or `oras://` and the reference for a SIF.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.oras {
            f.write_str("oras://")?;
        }
        f.write_str(&self.reference())
    }
}

/// A string that is not `[oras://]host/repository:tag`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an image name; write [oras://]host/repository:tag")]
pub struct ImageNameError(String);

impl FromStr for ImageName {
    type Err = ImageNameError;

    /// Reads what [`Display`](fmt::Display) wrote.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = || ImageNameError(printable(s));
        let (oras, reference) = match s.strip_prefix("oras://") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (host, rest) = reference.split_once('/').ok_or_else(refuse)?;
        let (repository, tag) = rest.rsplit_once(':').ok_or_else(refuse)?;
        if repository.is_empty() || tag.is_empty() || tag.contains('/') {
            return Err(refuse());
        }
        Ok(ImageName {
            registry: host.parse().map_err(|_| refuse())?,
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            oras,
        })
    }
}

impl TryFrom<String> for ImageName {
    type Error = ImageNameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<ImageName> for String {
    fn from(name: ImageName) -> Self {
        name.to_string()
    }
}

/// The package names as Wave's generated environment lists them: conda names, then `pip` and
/// the pip names when there are pip packages; repeats dropped; more than five cut to four and
/// `pruned`.
fn repository_suffix(entries: &[PackageEntry]) -> String {
    let mut names: Vec<&str> = Vec::new();
    let mut seen = HashSet::new();
    let conda = entries
        .iter()
        .filter(|e| matches!(e, PackageEntry::Conda(_)));
    let pip: Vec<&PackageEntry> = entries
        .iter()
        .filter(|e| matches!(e, PackageEntry::Pip(_)))
        .collect();
    let pip_marker = (!pip.is_empty()).then_some("pip");
    let all = conda
        .map(PackageEntry::name)
        .chain(pip_marker)
        .chain(pip.into_iter().map(PackageEntry::name));
    for name in all {
        if seen.insert(name) {
            names.push(name);
        }
    }
    let joined = if names.len() > MAX_NAMED_PACKAGES {
        format!("{}_pruned", names[..MAX_NAMED_PACKAGES - 1].join("_"))
    } else {
        names.join("_")
    };
    normalise_name(&joined)
}

/// The version every package pins, when they all pin the same one.
///
/// A pip-only request counts the `pip` entry of its environment as unversioned, as Wave does,
/// so pip images never carry a version in the tag.
fn shared_version(entries: &[PackageEntry]) -> Option<&str> {
    let has_pip = entries.iter().any(|e| matches!(e, PackageEntry::Pip(_)));
    if has_pip {
        return None;
    }
    let mut versions = entries.iter().map(PackageEntry::pinned_version);
    let first = versions.next()??;
    versions.all(|v| v == Some(first)).then_some(first)
}

/// Wave's tag normalisation: keep `[A-Za-z0-9_.-]`, cut to 80, trim non-alphanumerics.
fn normalise_tag(text: &str) -> String {
    let kept: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .collect();
    shorten(&kept, MAX_TAG_LEN)
}

/// Wave's name normalisation: lowercase, keep `[a-z0-9_.-/]`, cut to 255, trim.
fn normalise_name(text: &str) -> String {
    let kept: String = text
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
        .collect();
    shorten(&kept, MAX_NAME_LEN)
}

/// Cuts `text` to `max` characters (collapsing repeated `_` first when it is too long) and
/// trims anything but letters and digits from both ends.
fn shorten(text: &str, max: usize) -> String {
    let mut text = text.to_owned();
    if text.len() > max {
        text = text
            .split('_')
            .filter(|token| !token.is_empty())
            .collect::<Vec<_>>()
            .join("_");
        text.truncate(max);
    }
    text.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RequestInput;

    #[test]
    fn image_names_read_back_what_they_print() {
        let key: ImageKey = "0123456789abcdef".repeat(4).parse().expect("a key");
        let registry: RegistryHost = "kiln.example.org:5000".parse().expect("a host");
        let names = [
            ImageName::dockerfile(&registry, &key),
            ImageName::library(&registry, "alice/tools/samtools", "1.21"),
            "oras://localhost:9090/library/samtools:1.21--0123"
                .parse()
                .expect("a name"),
        ];
        for name in names {
            assert_eq!(name.to_string().parse::<ImageName>(), Ok(name.clone()));
        }
        assert_eq!(
            ImageName::dockerfile(&registry, &key).to_string(),
            "kiln.example.org:5000/library/dockerfile:0123456789abcdef"
        );
        let sif: ImageName = "oras://localhost:9090/library/samtools:1.21--0123"
            .parse()
            .expect("a name");
        assert_eq!(
            (sif.repository(), sif.tag(), sif.without_tag().as_str()),
            (
                "library/samtools",
                "1.21--0123",
                "localhost:9090/library/samtools"
            )
        );
        for bad in ["no-tag-or-host", "host/no-tag", "no-host:tag", "h/r:t/x"] {
            assert!(bad.parse::<ImageName>().is_err(), "{bad}");
        }
    }

    fn named(entries: &[&str]) -> ImageName {
        let request = Request::try_from(RequestInput {
            entries: entries.iter().map(|s| s.to_string()).collect(),
            ..RequestInput::default()
        })
        .expect("valid request");
        let key: ImageKey = "0123456789abcdef".repeat(4).parse().expect("valid key");
        ImageName::new(
            &"localhost:9090".parse().expect("valid host"),
            &request,
            &key,
        )
    }

    #[test]
    fn wave_image_suffix_rules() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["samtools=1.0"],
                "localhost:9090/library/samtools:1.0--0123456789abcdef",
            ),
            (
                &["samtools=1.0", "bamtools=2.0", "multiqc=1.15"],
                "localhost:9090/library/bamtools_multiqc_samtools:0123456789abcdef",
            ),
            (
                &["htslib=1.21", "samtools=1.21"],
                "localhost:9090/library/htslib_samtools:1.21--0123456789abcdef",
            ),
            (
                &["htslib=1.21", "samtools"],
                "localhost:9090/library/htslib_samtools:0123456789abcdef",
            ),
            (
                &["a=1", "b=1", "c=1", "d=1", "e=1", "f=1", "g=1"],
                "localhost:9090/library/a_b_c_d_pruned:1--0123456789abcdef",
            ),
            (
                &["a", "b", "c", "d", "e"],
                "localhost:9090/library/a_b_c_d_e:0123456789abcdef",
            ),
            (
                &["pip:pandas==2.2.2"],
                "localhost:9090/library/pip_pandas:0123456789abcdef",
            ),
            (
                &["pip:requests==2.32.3", "samtools=1.21"],
                "localhost:9090/library/samtools_pip_requests:0123456789abcdef",
            ),
            (
                &["bioconda::samtools=1.21.*"],
                "localhost:9090/library/samtools:1.21--0123456789abcdef",
            ),
            (
                &["samtools>=1.2,<2"],
                "localhost:9090/library/samtools:0123456789abcdef",
            ),
            (
                &["python=3.12", "pip:python-dateutil"],
                "localhost:9090/library/python_pip_python-dateutil:0123456789abcdef",
            ),
        ];
        for (entries, expected) in cases {
            assert_eq!(named(entries).to_string(), *expected, "{entries:?}");
        }
    }

    #[test]
    fn sif_names_use_oras() {
        let request = Request::try_from(RequestInput {
            entries: vec!["samtools=1.21".into()],
            format: Some("sif".into()),
            ..RequestInput::default()
        })
        .expect("valid");
        let key: ImageKey = "f".repeat(64).parse().expect("valid key");
        let name = ImageName::new(&"kiln.example.org".parse().expect("host"), &request, &key);
        assert_eq!(
            name.to_string(),
            "oras://kiln.example.org/library/samtools:1.21--ffffffffffffffff"
        );
    }

    #[test]
    fn normalisation_limits() {
        assert_eq!(normalise_tag("1.21.*"), "1.21");
        assert_eq!(normalise_tag("__1.0+cuda__"), "1.0cuda");
        let long = format!("{}_{}", "a".repeat(70), "b".repeat(30));
        assert_eq!(normalise_tag(&long).len(), 80);
        assert_eq!(normalise_name("Foo_Bar!"), "foo_bar");
        assert_eq!(normalise_name(&"x".repeat(300)).len(), 255);
    }

    #[test]
    fn key_frames_fields() {
        let base = KeyInputs {
            recipe: "FROM a",
            environment: "b",
            platforms: &[Platform::LinuxAmd64],
            repository: "localhost:9090/library",
        };
        let key = ImageKey::compute(&base);
        assert_eq!(key.as_str().len(), 64);
        assert_eq!(key, ImageKey::compute(&base), "deterministic");
        let shifted = KeyInputs {
            recipe: "FROM ab",
            environment: "",
            ..base
        };
        assert_ne!(key, ImageKey::compute(&shifted));
        let arm = KeyInputs {
            platforms: &[Platform::LinuxArm64],
            ..base
        };
        assert_ne!(key, ImageKey::compute(&arm));
        let other_repo = KeyInputs {
            repository: "example.org/library",
            ..base
        };
        assert_ne!(key, ImageKey::compute(&other_repo));
    }

    #[test]
    fn registry_hosts() {
        for ok in [
            "localhost:9090",
            "registry.example.org",
            "127.0.0.1:5000",
            "Kiln.Example.Org",
        ] {
            assert!(ok.parse::<RegistryHost>().is_ok(), "{ok}");
        }
        for bad in [
            "", "http://x", "x:0", "x:99999", "a/b", "-a.org", "a..b", "a b",
        ] {
            assert!(bad.parse::<RegistryHost>().is_err(), "{bad}");
        }
    }
}
