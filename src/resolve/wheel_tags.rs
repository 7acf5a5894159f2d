//! Which of a release's wheels fits a target interpreter and platform best.
//!
//! uv lists every wheel of a locked release that the target can install; kiln installs exactly
//! one, chosen the way pip would: the most specific interpreter/ABI first (`cp312-cp312`, then
//! the stable ABI, then pure Python), then the newest libc baseline the target supports.

use crate::spec::Platform;

/// The C library a base image runs on, with its `major.minor` version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Libc {
    /// glibc, e.g. `2.36`: `manylinux` wheels up to that baseline run.
    Glibc(String),
    /// musl, e.g. `1.2`: `musllinux` wheels up to that baseline run.
    Musl(String),
}

/// The interpreter and platform wheels are chosen for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelTarget {
    /// The image platform.
    pub platform: Platform,
    /// CPython `(major, minor)`.
    pub python: (u32, u32),
    /// The base image's C library.
    pub libc: Libc,
}

impl WheelTarget {
    /// The wheel architecture name (`x86_64`, `aarch64`).
    pub fn machine(&self) -> &'static str {
        match self.platform {
            Platform::LinuxAmd64 => "x86_64",
            Platform::LinuxArm64 => "aarch64",
        }
    }

    /// uv's `--python-platform` for this target.
    pub fn uv_platform(&self) -> String {
        match &self.libc {
            Libc::Glibc(version) => {
                let (major, minor) = major_minor(version).unwrap_or((2, 17));
                format!("{}-manylinux_{major}_{minor}", self.machine())
            }
            Libc::Musl(_) => format!("{}-unknown-linux-musl", self.machine()),
        }
    }

    /// How well a wheel file name fits: lower is better; `None` when it cannot be installed.
    pub fn rank(&self, file_name: &str) -> Option<u32> {
        let stem = file_name.strip_suffix(".whl")?;
        let parts: Vec<&str> = stem.split('-').collect();
        let [python_tags, abi_tags, platform_tags] = match parts.as_slice() {
            [_, _, python, abi, platform] | [_, _, _, python, abi, platform] => {
                [*python, *abi, *platform]
            }
            _ => return None,
        };
        let interpreter = python_tags
            .split('.')
            .flat_map(|python| abi_tags.split('.').map(move |abi| (python, abi)))
            .filter_map(|(python, abi)| self.interpreter_rank(python, abi))
            .min()?;
        let platform = platform_tags
            .split('.')
            .filter_map(|tag| self.platform_rank(tag))
            .min()?;
        Some(interpreter * 10_000 + platform)
    }

    fn interpreter_rank(&self, python: &str, abi: &str) -> Option<u32> {
        let (major, minor) = self.python;
        let exact = format!("cp{major}{minor}");
        if python == exact && abi == exact {
            return Some(0);
        }
        if abi == "abi3" {
            let built_for = python.strip_prefix(&format!("cp{major}"))?;
            let built_minor: u32 = built_for.parse().ok()?;
            return (built_minor <= minor).then(|| 1 + minor - built_minor);
        }
        if abi != "none" {
            return None;
        }
        if python == exact {
            return Some(100);
        }
        let generic = python.strip_prefix("py")?;
        if generic == major.to_string() {
            return Some(200);
        }
        let version = generic.strip_prefix(&major.to_string())?;
        let built_minor: u32 = version.parse().ok()?;
        (built_minor <= minor).then(|| 101 + minor - built_minor)
    }

    fn platform_rank(&self, tag: &str) -> Option<u32> {
        if tag == "any" {
            return Some(1_000);
        }
        let machine = self.machine();
        let (family, target) = match &self.libc {
            Libc::Glibc(version) => ("manylinux", version),
            Libc::Musl(version) => ("musllinux", version),
        };
        let (target_major, target_minor) = major_minor(target)?;
        let baseline = tag.strip_suffix(&format!("_{machine}"))?;
        let (major, minor) = match (family, baseline) {
            ("manylinux", "manylinux1") => (2, 5),
            ("manylinux", "manylinux2010") => (2, 12),
            ("manylinux", "manylinux2014") => (2, 17),
            _ => {
                let version = baseline.strip_prefix(family)?.strip_prefix('_')?;
                let (major, minor) = version.split_once('_')?;
                (major.parse().ok()?, minor.parse().ok()?)
            }
        };
        if major != target_major || minor > target_minor {
            return None;
        }
        Some(target_minor - minor)
    }
}

/// `major.minor` of a version such as `2.36` or `3.12.7`.
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(platform: Platform, libc: Libc) -> WheelTarget {
        WheelTarget {
            platform,
            python: (3, 11),
            libc,
        }
    }

    #[test]
    fn the_most_specific_wheel_wins() {
        let arm = target(Platform::LinuxArm64, Libc::Glibc("2.36".into()));
        let wheels = [
            "charset_normalizer-3.5.2-py3-none-any.whl",
            "charset_normalizer-3.5.2-cp37-abi3-manylinux2014_aarch64.manylinux_2_17_aarch64.whl",
            "charset_normalizer-3.5.2-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.manylinux_2_28_aarch64.whl",
            "charset_normalizer-3.5.2-cp311-cp311-manylinux_2_17_x86_64.whl",
        ];
        let best = wheels
            .iter()
            .filter_map(|w| arm.rank(w).map(|rank| (rank, *w)))
            .min()
            .map(|(_, w)| w);
        assert_eq!(best, Some(wheels[2]));
        assert_eq!(
            arm.rank(wheels[3]),
            None,
            "an x86_64 wheel never fits arm64"
        );
        assert!(arm.rank(wheels[1]) < arm.rank(wheels[0]));
    }

    #[test]
    fn newer_baselines_than_the_base_are_refused() {
        let old = target(Platform::LinuxAmd64, Libc::Glibc("2.17".into()));
        assert_eq!(
            old.rank("numpy-2.1.3-cp311-cp311-manylinux_2_28_x86_64.whl"),
            None
        );
        assert!(
            old.rank("numpy-2.1.3-cp311-cp311-manylinux2014_x86_64.whl")
                .is_some()
        );
        assert_eq!(
            old.rank("numpy-2.1.3-cp311-cp311-musllinux_1_1_x86_64.whl"),
            None
        );
        assert_eq!(old.uv_platform(), "x86_64-manylinux_2_17");
    }

    #[test]
    fn interpreter_tags_follow_the_target_python() {
        let amd = target(Platform::LinuxAmd64, Libc::Glibc("2.36".into()));
        assert_eq!(amd.rank("x-1-cp312-cp312-manylinux_2_17_x86_64.whl"), None);
        assert_eq!(amd.rank("x-1-cp312-abi3-manylinux_2_17_x86_64.whl"), None);
        assert!(amd.rank("x-1-py2.py3-none-any.whl").is_some());
        assert!(amd.rank("x-1-1build-py3-none-any.whl").is_some());
        assert_eq!(amd.rank("x-1-py3-none-any.tar.gz"), None);
        let musl = target(Platform::LinuxAmd64, Libc::Musl("1.2".into()));
        assert!(
            musl.rank("x-1-cp311-cp311-musllinux_1_1_x86_64.whl")
                .is_some()
        );
        assert_eq!(musl.uv_platform(), "x86_64-unknown-linux-musl");
    }
}
