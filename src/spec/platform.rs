//! Target platforms and image formats.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A platform kiln builds images for.
///
/// Only Linux on amd64 and arm64: the two platforms conda channels and PyPI wheels cover well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Platform {
    /// `linux/amd64` (x86_64).
    LinuxAmd64,
    /// `linux/arm64` (aarch64).
    LinuxArm64,
}

impl Platform {
    /// Every supported platform, in canonical order.
    pub const ALL: [Platform; 2] = [Platform::LinuxAmd64, Platform::LinuxArm64];

    /// The OCI platform string, `os/architecture`.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "linux/amd64",
            Platform::LinuxArm64 => "linux/arm64",
        }
    }

    /// The OCI architecture name (`amd64`, `arm64`).
    pub fn architecture(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "amd64",
            Platform::LinuxArm64 => "arm64",
        }
    }

    /// The conda subdirectory that holds packages for this platform.
    pub fn conda_subdir(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "linux-64",
            Platform::LinuxArm64 => "linux-aarch64",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A platform string that names no supported platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a supported platform; use linux/amd64 or linux/arm64")]
pub struct PlatformError(String);

impl FromStr for Platform {
    type Err = PlatformError;

    /// Accepts the OCI names and the aliases users type: `amd64`, `x86_64`, `arm64`, `aarch64`,
    /// with or without `linux/`, and `arm64/v8`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let arch = lower.strip_prefix("linux/").unwrap_or(&lower);
        match arch {
            "amd64" | "x86_64" | "x86-64" => Ok(Platform::LinuxAmd64),
            "arm64" | "aarch64" | "arm64/v8" => Ok(Platform::LinuxArm64),
            _ => Err(PlatformError(super::entry::printable(s))),
        }
    }
}

impl TryFrom<String> for Platform {
    type Error = PlatformError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Platform> for String {
    fn from(platform: Platform) -> Self {
        platform.as_str().to_owned()
    }
}

/// What kind of image a request produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Format {
    /// An OCI image, pulled with docker, podman, crane or skopeo.
    #[default]
    Docker,
    /// A Singularity image file, pushed as an ORAS artifact.
    Sif,
}

impl Format {
    /// The canonical name: `docker` or `sif`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Docker => "docker",
            Format::Sif => "sif",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format string that names no supported format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a supported image format; use docker or sif")]
pub struct FormatError(String);

impl FromStr for Format {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "docker" | "oci" => Ok(Format::Docker),
            "sif" | "singularity" | "apptainer" => Ok(Format::Sif),
            _ => Err(FormatError(super::entry::printable(s))),
        }
    }
}

impl TryFrom<String> for Format {
    type Error = FormatError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Format> for String {
    fn from(format: Format) -> Self {
        format.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_aliases() {
        for alias in ["linux/amd64", "amd64", "x86_64", "linux/x86_64", "AMD64"] {
            assert_eq!(alias.parse(), Ok(Platform::LinuxAmd64), "{alias}");
        }
        for alias in [
            "linux/arm64",
            "arm64",
            "aarch64",
            "linux/aarch64",
            "arm64/v8",
        ] {
            assert_eq!(alias.parse(), Ok(Platform::LinuxArm64), "{alias}");
        }
    }

    #[test]
    fn unknown_platforms_are_named() {
        let err = "windows/amd64".parse::<Platform>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`windows/amd64` is not a supported platform; use linux/amd64 or linux/arm64"
        );
        assert!("linux/ppc64le".parse::<Platform>().is_err());
        assert!("".parse::<Platform>().is_err());
    }

    #[test]
    fn formats() {
        assert_eq!("docker".parse(), Ok(Format::Docker));
        assert_eq!("SIF".parse(), Ok(Format::Sif));
        assert!("tar".parse::<Format>().is_err());
    }
}
