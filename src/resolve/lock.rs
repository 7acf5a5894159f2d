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
    /// Where it is downloaded from.
    pub url: String,
    /// `sha256` of the archive, lowercase hex.
    pub sha256: String,
    /// Archive size in bytes.
    pub size: u64,
}

impl LockedPackage {
    /// The archive's file name, the last segment of its URL.
    pub fn file_name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }
}

/// The locked packages of every target platform, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Platform (`linux/amd64`) → packages.
    pub platforms: BTreeMap<Platform, Vec<LockedPackage>>,
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
}
