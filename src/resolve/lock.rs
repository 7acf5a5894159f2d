//! The lock: exactly what a build installs, per platform.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::Platform;

/// One package archive, pinned by its checksum.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LockedPackage {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Build string.
    pub build: String,
    /// The channel subdirectory it comes from (`linux-64`, `noarch`, …).
    pub subdir: String,
    /// Its canonical URL, under the channel as the user named it
    /// (`https://conda.anaconda.org/bioconda/linux-64/…`), never a mirror's.
    pub url: String,
    /// `sha256` of the archive, lowercase hex.
    pub sha256: String,
    /// Archive size in bytes.
    pub size: u64,
    /// The license its repodata record declares (free text, often an SPDX expression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
}

impl LockedPackage {
    /// The archive's file name, the last segment of its URL.
    pub fn file_name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }
}

/// One wheel, pinned by its checksum.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LockedWheel {
    /// Distribution name, PEP 503 normalized.
    pub name: String,
    /// Version.
    pub version: String,
    /// The wheel's file name, which says which of the version's wheels it is.
    pub file_name: String,
    /// Where it was downloaded from: PyPI's file URL, or the configured index's. Kept out of
    /// the lock text, which must not depend on the index (see [`Lock::pip_requirements`]).
    pub url: String,
    /// `sha256` of the wheel, lowercase hex.
    pub sha256: String,
    /// Wheel size in bytes.
    pub size: u64,
    /// The license its METADATA declares (`License-Expression`, else `License`), known once
    /// the wheel is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
}

/// The locked packages of every target platform, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Platform (`linux/amd64`) → conda packages.
    pub platforms: BTreeMap<Platform, Vec<LockedPackage>>,
    /// Platform → wheels, installed after the conda packages.
    pub wheels: BTreeMap<Platform, Vec<LockedWheel>>,
}

impl Lock {
    /// The packages locked for `platform`.
    pub fn packages(&self, platform: Platform) -> &[LockedPackage] {
        self.platforms.get(&platform).map_or(&[], Vec::as_slice)
    }

    /// A conda explicit lock file for `platform`, the format `conda create --file` and
    /// `micromamba create -f` install from: one `url#sha256` line per package.
    pub fn explicit(&self, platform: Platform) -> String {
        let mut text = format!(
            "# This file may be used to create an environment using:\n\
             # $ conda create --name <env> --file <this file>\n\
             # platform: {}\n@EXPLICIT\n",
            platform.conda_subdir()
        );
        for package in self.packages(platform) {
            text.push_str(&format!("{}#{}\n", package.url, package.sha256));
        }
        text
    }

    /// The wheels locked for `platform`.
    pub fn wheels(&self, platform: Platform) -> &[LockedWheel] {
        self.wheels.get(&platform).map_or(&[], Vec::as_slice)
    }

    /// A pip requirements file for `platform` that installs exactly the locked wheels
    /// (`pip install --no-deps -r`): one `name==version --hash=sha256:…` line per wheel, with
    /// its file name and size.
    ///
    /// A wheel is named by its project, version and hash, not by a URL: a `pip_index_url`
    /// mirror's file URLs cannot be mapped back to PyPI's (whose paths are not derived from
    /// anything in the lock), and the lock is in the image, which must be the same on every
    /// kiln. pip installs these lines from whatever index it is given, and the hash admits
    /// only the locked file.
    pub fn pip_requirements(&self, platform: Platform) -> String {
        let mut text = format!("# pip wheels for {platform}\n");
        for wheel in self.wheels(platform) {
            text.push_str(&format!(
                "{}=={} --hash=sha256:{}  # {}, {} bytes\n",
                wheel.name, wheel.version, wheel.sha256, wheel.file_name, wheel.size
            ));
        }
        text
    }

    /// Everything locked for `platform`: the conda explicit file, then the wheels if any.
    pub fn text(&self, platform: Platform) -> String {
        let mut text = String::new();
        if !self.packages(platform).is_empty() {
            text.push_str(&self.explicit(platform));
        }
        if !self.wheels(platform).is_empty() {
            text.push_str(&self.pip_requirements(platform));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_lock_lists_urls_with_checksums() {
        let mut lock = Lock::default();
        lock.platforms.insert(
            Platform::LinuxArm64,
            vec![LockedPackage {
                name: "samtools".into(),
                version: "1.21".into(),
                build: "h0_0".into(),
                subdir: "linux-aarch64".into(),
                url: "https://conda.example.org/bioconda/linux-aarch64/samtools-1.21-h0_0.conda"
                    .into(),
                sha256: "ab".repeat(32),
                size: 10,
                license: None,
            }],
        );
        let text = lock.explicit(Platform::LinuxArm64);
        assert!(text.contains("# platform: linux-aarch64\n@EXPLICIT\n"));
        assert!(text.ends_with(&format!(
            "linux-aarch64/samtools-1.21-h0_0.conda#{}\n",
            "ab".repeat(32)
        )));
        assert_eq!(
            lock.packages(Platform::LinuxArm64)[0].file_name(),
            "samtools-1.21-h0_0.conda"
        );
        assert!(lock.packages(Platform::LinuxAmd64).is_empty());
    }

    #[test]
    fn wheels_follow_the_conda_packages() {
        let mut lock = Lock::default();
        lock.wheels.insert(
            Platform::LinuxAmd64,
            vec![LockedWheel {
                name: "requests".into(),
                version: "2.32.3".into(),
                file_name: "requests-2.32.3-py3-none-any.whl".into(),
                url: "https://files.example.org/requests-2.32.3-py3-none-any.whl".into(),
                sha256: "cd".repeat(32),
                size: 64928,
                license: None,
            }],
        );
        let text = lock.text(Platform::LinuxAmd64);
        assert!(
            !text.contains("@EXPLICIT"),
            "no conda packages, no explicit file"
        );
        assert!(text.ends_with(&format!(
            "requests==2.32.3 --hash=sha256:{}  # requests-2.32.3-py3-none-any.whl, 64928 bytes\n",
            "cd".repeat(32)
        )));
        assert!(
            !text.contains("files.example.org"),
            "the index a wheel came from is not in the lock: {text}"
        );
        assert!(lock.text(Platform::LinuxArm64).is_empty());
    }
}
