//! A whole request in canonical form: what is asked for, independent of how it was written.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::base::{KilnBase, KilnBaseError};
use super::conda::parse_channel_part;
use super::entry::{EntryError, PackageEntry, printable};
use super::platform::{Format, FormatError, Platform, PlatformError};

/// The channels a request uses when it names none, in priority order.
pub const DEFAULT_CHANNELS: [&str; 2] = ["conda-forge", "bioconda"];

/// The most packages one request may list.
pub const MAX_ENTRIES: usize = 200;

/// The most platforms one request may list (kiln builds two; repeats are allowed, endless ones
/// not).
pub const MAX_PLATFORMS: usize = 8;

/// A conda channel name, lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Channel(String);

impl Channel {
    /// The channel name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A channel that is not a channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("channel `{channel}` was refused: {reason}")]
pub struct ChannelError {
    channel: String,
    reason: String,
}

impl FromStr for Channel {
    type Err = ChannelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = |reason: String| ChannelError {
            channel: printable(s),
            reason,
        };
        if !s.is_ascii() || s.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(refuse(
                "it contains whitespace, control or non-ASCII characters".into(),
            ));
        }
        parse_channel_part(s).map(Channel).map_err(refuse)
    }
}

impl TryFrom<String> for Channel {
    type Error = ChannelError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Channel> for String {
    fn from(channel: Channel) -> Self {
        channel.0
    }
}

/// A validated request in canonical form.
///
/// Conda entries come before pip entries, each group sorted by name; duplicates are merged;
/// channels keep their order (it is their priority) without repeats; platforms are sorted.
/// Two requests that ask for the same thing are equal, and serialize to the same JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RequestInput")]
pub struct Request {
    entries: Vec<PackageEntry>,
    channels: Vec<Channel>,
    format: Format,
    platforms: Vec<Platform>,
    /// Written only when named, so a request on the default base serializes (and is
    /// labelled and stored) exactly as before bases could be named.
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<KilnBase>,
}

/// A request as a client sends it, before validation. Missing fields take defaults.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RequestInput {
    /// Package entries as written (`samtools=1.21`, `pip:requests==2.32.3`).
    #[serde(default, alias = "packages")]
    pub entries: Vec<String>,
    /// Channel names in priority order; empty means [`DEFAULT_CHANNELS`].
    #[serde(default)]
    pub channels: Vec<String>,
    /// `docker` (default) or `sif`.
    #[serde(default)]
    pub format: Option<String>,
    /// Platforms; empty means `linux/amd64`.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// A base in kiln's registry (`kiln/base/gl:bookworm`); none means kiln's default base.
    #[serde(default)]
    pub base: Option<String>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[expect(
    missing_docs,
    reason = "each variant's fields are what its message names"
)]
pub enum RequestError {
    /// No entries at all.
    #[error("the request lists no packages")]
    NoPackages,
    /// More entries than [`MAX_ENTRIES`].
    #[error("the request lists {0} packages; the limit is {MAX_ENTRIES}")]
    TooManyPackages(usize),
    /// More platforms than [`MAX_PLATFORMS`].
    #[error("the request lists {0} platforms; the limit is {MAX_PLATFORMS}")]
    TooManyPlatforms(usize),
    /// An entry was refused.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// One package with two different specs.
    #[error("package `{name}` is listed twice, as `{first}` and as `{second}`; keep one")]
    Conflict {
        name: String,
        first: String,
        second: String,
    },
    /// A channel was refused.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// A platform was refused.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// The format was refused.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The base was refused.
    #[error(transparent)]
    Base(#[from] KilnBaseError),
}

impl TryFrom<RequestInput> for Request {
    type Error = RequestError;

    fn try_from(input: RequestInput) -> Result<Self, Self::Error> {
        // Counted before anything is parsed: a long list costs nothing but this refusal.
        if input.entries.len() > MAX_ENTRIES {
            return Err(RequestError::TooManyPackages(input.entries.len()));
        }
        if input.platforms.len() > MAX_PLATFORMS {
            return Err(RequestError::TooManyPlatforms(input.platforms.len()));
        }
        let entries = input
            .entries
            .iter()
            .map(|entry| entry.parse())
            .collect::<Result<Vec<PackageEntry>, _>>()?;
        let channels = input
            .channels
            .iter()
            .map(|channel| channel.parse())
            .collect::<Result<Vec<Channel>, _>>()?;
        let format = input.format.as_deref().map(str::parse).transpose()?;
        let platforms = input
            .platforms
            .iter()
            .map(|platform| platform.parse())
            .collect::<Result<Vec<Platform>, _>>()?;
        let base = input.base.as_deref().map(str::parse).transpose()?;
        Ok(Request::new(entries, channels, format.unwrap_or_default(), platforms)?.on_base(base))
    }
}

impl Request {
    /// Builds the canonical request from validated parts.
    pub fn new(
        entries: Vec<PackageEntry>,
        channels: Vec<Channel>,
        format: Format,
        platforms: Vec<Platform>,
    ) -> Result<Self, RequestError> {
        if entries.is_empty() {
            return Err(RequestError::NoPackages);
        }
        if entries.len() > MAX_ENTRIES {
            return Err(RequestError::TooManyPackages(entries.len()));
        }
        // Keyed by (is pip, name): conda and pip may both have a package called `numpy`.
        let mut by_name: BTreeMap<(bool, String), PackageEntry> = BTreeMap::new();
        for entry in entries {
            let key = (
                matches!(entry, PackageEntry::Pip(_)),
                entry.name().to_owned(),
            );
            match by_name.get(&key) {
                Some(existing) if *existing != entry => {
                    let (first, second) = ordered(existing.to_string(), entry.to_string());
                    return Err(RequestError::Conflict {
                        name: key.1,
                        first,
                        second,
                    });
                }
                Some(_) => {}
                None => {
                    by_name.insert(key, entry);
                }
            }
        }
        let mut channels = if channels.is_empty() {
            DEFAULT_CHANNELS
                .iter()
                .map(|name| Channel((*name).to_owned()))
                .collect()
        } else {
            channels
        };
        let mut seen = std::collections::HashSet::new();
        channels.retain(|channel| seen.insert(channel.clone()));
        let mut platforms = if platforms.is_empty() {
            vec![Platform::LinuxAmd64]
        } else {
            platforms
        };
        platforms.sort();
        platforms.dedup();
        Ok(Request {
            entries: by_name.into_values().collect(),
            channels,
            format,
            platforms,
            base: None,
        })
    }

    /// The same request on `base` instead of kiln's default base (`None` means the default).
    pub fn on_base(self, base: Option<KilnBase>) -> Request {
        Request { base, ..self }
    }

    /// All entries, conda first, each group sorted by name.
    pub fn entries(&self) -> &[PackageEntry] {
        &self.entries
    }

    /// The conda entries.
    pub fn conda_entries(&self) -> impl Iterator<Item = &PackageEntry> {
        self.entries
            .iter()
            .filter(|entry| matches!(entry, PackageEntry::Conda(_)))
    }

    /// The pip entries.
    pub fn pip_entries(&self) -> impl Iterator<Item = &PackageEntry> {
        self.entries
            .iter()
            .filter(|entry| matches!(entry, PackageEntry::Pip(_)))
    }

    /// Whether any entry is a conda package.
    pub fn has_conda(&self) -> bool {
        self.conda_entries().next().is_some()
    }

    /// Whether any entry is a pip package.
    pub fn has_pip(&self) -> bool {
        self.pip_entries().next().is_some()
    }

    /// Channels in priority order.
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// The image format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Target platforms, sorted.
    pub fn platforms(&self) -> &[Platform] {
        &self.platforms
    }

    /// The base the request names, if it names one.
    pub fn base(&self) -> Option<&KilnBase> {
        self.base.as_ref()
    }

    /// The same request for one platform only (a SIF holds one architecture).
    pub fn for_platform(&self, platform: Platform) -> Request {
        Request {
            platforms: vec![platform],
            ..self.clone()
        }
    }
}

fn ordered(a: String, b: String) -> (String, String) {
    if a <= b { (a, b) } else { (b, a) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        entries: &[&str],
        channels: &[&str],
        platforms: &[&str],
    ) -> Result<Request, RequestError> {
        Request::try_from(RequestInput {
            entries: entries.iter().map(|s| s.to_string()).collect(),
            channels: channels.iter().map(|s| s.to_string()).collect(),
            format: None,
            platforms: platforms.iter().map(|s| s.to_string()).collect(),
            base: None,
        })
    }

    #[test]
    fn order_and_case_do_not_matter() {
        let a = request(
            &["samtools=1.21", "bioconda::bcftools=1.21", "pip:Requests"],
            &[],
            &[],
        );
        let b = request(
            &[
                "pip:requests",
                "BioConda::bcftools=1.21",
                "samtools=1.21",
                "samtools=1.21",
            ],
            &[],
            &["x86_64"],
        );
        assert_eq!(a, b);
        let a = a.expect("valid");
        let names: Vec<String> = a.entries().iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            ["bioconda::bcftools=1.21", "samtools=1.21", "pip:requests"]
        );
        assert_eq!(
            serde_json::to_string(&a).expect("serializes"),
            r#"{"entries":["bioconda::bcftools=1.21","samtools=1.21","pip:requests"],"channels":["conda-forge","bioconda"],"format":"docker","platforms":["linux/amd64"]}"#
        );
    }

    #[test]
    fn channel_order_is_kept() {
        let r =
            request(&["samtools"], &["bioconda", "conda-forge", "bioconda"], &[]).expect("valid");
        let channels: Vec<&str> = r.channels().iter().map(Channel::as_str).collect();
        assert_eq!(channels, ["bioconda", "conda-forge"]);
    }

    #[test]
    fn platforms_are_normalized_and_sorted() {
        let r = request(&["samtools"], &[], &["aarch64", "amd64", "linux/arm64"]).expect("valid");
        assert_eq!(r.platforms(), [Platform::LinuxAmd64, Platform::LinuxArm64]);
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(request(&[], &[], &[]), Err(RequestError::NoPackages));
        assert_eq!(
            request(&["samtools=1.20", "samtools=1.21"], &[], &[])
                .unwrap_err()
                .to_string(),
            "package `samtools` is listed twice, as `samtools=1.20` and as `samtools=1.21`; keep one"
        );
        assert_eq!(
            request(&["samtools"], &["https://evil.example/ch"], &[])
                .unwrap_err()
                .to_string(),
            "channel `https://evil.example/ch` was refused: channel `https://evil.example/ch` looks like a URL; name channels, and map them to mirrors in kiln's configuration"
        );
        assert_eq!(
            request(&["samtools"], &[], &["riscv64"])
                .unwrap_err()
                .to_string(),
            "`riscv64` is not a supported platform; use linux/amd64 or linux/arm64"
        );
        let too_many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("pkg{i}")).collect();
        let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
        assert_eq!(
            request(&refs, &[], &[]),
            Err(RequestError::TooManyPackages(MAX_ENTRIES + 1))
        );
        let platforms = vec!["linux/amd64"; MAX_PLATFORMS + 1];
        assert_eq!(
            request(&["samtools"], &[], &platforms)
                .unwrap_err()
                .to_string(),
            "the request lists 9 platforms; the limit is 8"
        );
    }

    #[test]
    fn a_named_base_is_part_of_the_request_and_only_then_serialized() {
        let default = request(&["samtools=1.21"], &[], &[]).expect("valid");
        let on_gl = Request::try_from(RequestInput {
            entries: vec!["samtools=1.21".into()],
            base: Some("kiln/base/gl:bookworm".into()),
            ..RequestInput::default()
        })
        .expect("valid");
        assert_ne!(default, on_gl);
        assert_eq!(
            on_gl.base().map(KilnBase::as_str),
            Some("kiln/base/gl:bookworm")
        );
        assert_eq!(default.base(), None);
        assert_eq!(
            serde_json::to_string(&default).expect("serializes"),
            r#"{"entries":["samtools=1.21"],"channels":["conda-forge","bioconda"],"format":"docker","platforms":["linux/amd64"]}"#,
            "a request on the default base serializes as before bases could be named"
        );
        let json = serde_json::to_string(&on_gl).expect("serializes");
        assert_eq!(
            json,
            r#"{"entries":["samtools=1.21"],"channels":["conda-forge","bioconda"],"format":"docker","platforms":["linux/amd64"],"base":"kiln/base/gl:bookworm"}"#
        );
        let stored: Request = serde_json::from_str(&json).expect("reads back");
        assert_eq!(stored, on_gl);
        assert_eq!(
            on_gl.for_platform(Platform::LinuxArm64).base(),
            on_gl.base()
        );
        let err = serde_json::from_str::<Request>(
            r#"{"entries":["samtools"],"base":"docker.io/library/debian:12"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("registry host"), "{err}");
    }

    #[test]
    fn json_input_is_validated() {
        let ok: Request = serde_json::from_str(
            r#"{"entries":["samtools=1.21"],"format":"sif","platforms":["arm64"]}"#,
        )
        .expect("valid");
        assert_eq!(ok.format(), Format::Sif);
        assert_eq!(ok.platforms(), [Platform::LinuxArm64]);
        let err = serde_json::from_str::<Request>(r#"{"entries":["samtools`id`"]}"#).unwrap_err();
        assert!(err.to_string().contains("samtools`id`"), "{err}");
    }
}
