//! Packing a flattened root file system into a reproducible squashfs, the SIF's system partition.
//!
//! kiln runs `mksquashfs` (squashfs-tools 4.5 or later) rather than writing squashfs itself. The
//! options are those SingularityCE and Apptainer use (project Singularity reference §5.4: gzip,
//! 128 KiB blocks, root-owned), plus what makes the output a pure function of the tree's paths,
//! types, contents and modes: no xattrs, fixed times, a fixed root directory mode, and
//! squashfs-tools' reproducible mode (which also makes the result independent of
//! `-processors`). `mksquashfs` sorts directory entries itself, so the on-disk directory order
//! does not matter either.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How many trailing lines of `mksquashfs` output an error carries.
const TAIL_LINES: usize = 20;

/// What [`mksquashfs`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquashfsStats {
    /// Size of the squashfs file in bytes.
    pub size: u64,
    /// How long `mksquashfs` ran, for build logs and metrics.
    pub duration: Duration,
}

/// Why the squashfs could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SquashfsError {
    /// `mksquashfs` is not on `PATH`.
    #[error("mksquashfs was not found on PATH; install squashfs-tools (4.5 or later)")]
    NotInstalled {
        /// The spawn error.
        #[source]
        source: io::Error,
    },
    /// `mksquashfs` could not be started or waited for.
    #[error("could not run mksquashfs")]
    Spawn {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `mksquashfs` exited unsuccessfully; `output` is the end of what it printed.
    #[error("mksquashfs {} failed ({status}):\n{output}", root.display())]
    Failed {
        /// The tree being packed.
        root: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its stderr (or stdout when stderr is empty).
        output: String,
    },
    /// The output file could not be examined afterwards.
    #[error("could not read {}", path.display())]
    Output {
        /// The squashfs file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// `mksquashfs` runs this process allows at once, once [`limit_runs`] or the first run set it.
static RUNS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();

/// Caps the `mksquashfs` runs of this process at `runs` (at least one): each uses every core,
/// so builds squashing at once would only slow each other down and hold more disk at a time.
/// The first call counts (`kiln serve` makes it at start, from `build.max_mksquashfs`); without
/// one the cap is the number of cores. Returns whether this call set it.
pub fn limit_runs(runs: usize) -> bool {
    RUNS.set(tokio::sync::Semaphore::new(runs.max(1))).is_ok()
}

fn runs() -> &'static tokio::sync::Semaphore {
    RUNS.get_or_init(|| {
        tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        )
    })
}

/// Packs the directory `root` into the squashfs file `out` (replaced if it exists), byte for
/// byte the same for the same tree on any host, using all CPUs; waits while the process's cap
/// of runs ([`limit_runs`]) is reached.
pub async fn mksquashfs(root: &Path, out: &Path) -> Result<SquashfsStats, SquashfsError> {
    let processors = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // Never closed, so acquiring cannot fail.
    let _turn = runs().acquire().await.ok();
    run(root, out, processors).await
}

async fn run(root: &Path, out: &Path, processors: usize) -> Result<SquashfsStats, SquashfsError> {
    let started = Instant::now();
    let output = crate::child::command("mksquashfs")
        .args(args(root, out, processors))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => SquashfsError::NotInstalled { source },
            _ => SquashfsError::Spawn { source },
        })?;
    if !output.status.success() {
        let text = if output.stderr.iter().all(u8::is_ascii_whitespace) {
            &output.stdout
        } else {
            &output.stderr
        };
        let text = String::from_utf8_lossy(text);
        let lines: Vec<&str> = text.trim_end().lines().collect();
        return Err(SquashfsError::Failed {
            root: root.to_path_buf(),
            status: output.status,
            output: lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n"),
        });
    }
    let size = tokio::fs::metadata(out)
        .await
        .map_err(|source| SquashfsError::Output {
            path: out.to_path_buf(),
            source,
        })?
        .len();
    Ok(SquashfsStats {
        size,
        duration: started.elapsed(),
    })
}

/// The `mksquashfs` command line, without the program.
fn args(root: &Path, out: &Path, processors: usize) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![root.into(), out.into()];
    args.extend(
        [
            // What SingularityCE and Apptainer pass (§5.4), with the block size explicit.
            "-noappend",
            "-comp",
            "gzip",
            "-b",
            "131072",
            "-all-root",
            // Reproducibility: host xattrs (SELinux labels...), times and the mode of the
            // directory kiln happened to flatten into must not reach the image.
            "-no-xattrs",
            "-reproducible",
            "-mkfs-time",
            "0",
            "-all-time",
            "0",
            "-root-mode",
            "755",
            // A file mksquashfs cannot read would otherwise become an empty file, with a warning.
            "-exit-on-error",
            "-no-progress",
            "-quiet",
            "-processors",
        ]
        .map(OsString::from),
    );
    args.push(processors.to_string().into());
    args
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::SystemTime;

    use sha2::{Digest as _, Sha256};

    use super::*;

    const FILES: &[(&str, &str, u32)] = &[
        ("bin/tool", "#!/bin/sh\necho hi\n", 0o755),
        ("etc/a", "a", 0o644),
        ("etc/b", "b", 0o600),
        ("etc/c", "c", 0o644),
        ("etc/z", "same content as y", 0o644),
        ("etc/y", "same content as y", 0o644),
        ("big", "", 0o644),
    ];

    /// Builds the same tree at `root`, creating entries in forward or reverse order, with
    /// distinct times.
    fn tree(root: &Path, reverse: bool, time: SystemTime) {
        fs::create_dir(root).unwrap();
        fs::set_permissions(
            root,
            fs::Permissions::from_mode(if reverse { 0o700 } else { 0o755 }),
        )
        .unwrap();
        let mut files = FILES.to_vec();
        if reverse {
            files.reverse();
        }
        for (i, (name, content, mode)) in files.iter().enumerate() {
            let path = root.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            let content = if *name == "big" {
                (0..300_000u32)
                    .flat_map(|n| (n % 251).to_le_bytes())
                    .collect()
            } else {
                content.as_bytes().to_vec()
            };
            fs::write(&path, content).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
            let time = time + Duration::from_secs(i as u64);
            File::open(&path).unwrap().set_modified(time).unwrap();
        }
        symlink("../bin/tool", root.join("etc/link")).unwrap();
        fs::hard_link(root.join("etc/a"), root.join("etc/hard")).unwrap();
        for dir in ["", "bin", "etc"] {
            File::open(root.join(dir))
                .unwrap()
                .set_modified(time)
                .unwrap();
        }
    }

    fn sha256(path: &Path) -> String {
        hex::encode(Sha256::digest(fs::read(path).unwrap()))
    }

    fn unsquashfs(args: &[&str], image: &Path) -> String {
        let output = std::process::Command::new("unsquashfs")
            .args(args)
            .arg(image)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    #[tokio::test]
    async fn same_tree_gives_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        // On tmpfs a directory lists its entries newest first; on ext4 in hash order. A copy on
        // each, made in opposite orders, makes sure the listing order really differs.
        let shm = tempfile::tempdir_in("/dev/shm").ok();
        let a = dir.path().join("a");
        let b = shm.as_ref().map_or(dir.path(), |d| d.path()).join("b");
        tree(
            &a,
            false,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        );
        tree(&b, true, SystemTime::now());
        let order = |dir: &Path| -> Vec<_> {
            fs::read_dir(dir.join("etc"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect()
        };
        if shm.is_some() {
            assert_ne!(order(&a), order(&b), "the copies should list differently");
        }
        let (sa, sb) = (dir.path().join("a.sqfs"), dir.path().join("b.sqfs"));
        let stats = mksquashfs(&a, &sa).await.unwrap();
        assert_eq!(stats.size, fs::metadata(&sa).unwrap().len());
        run(&b, &sb, 1).await.unwrap();
        assert_eq!(sha256(&sa), sha256(&sb));

        // Running again over an existing file replaces it (-noappend).
        mksquashfs(&a, &sb).await.unwrap();
        assert_eq!(sha256(&sa), sha256(&sb));

        let list = unsquashfs(&["-l"], &sa);
        for name in ["bin/tool", "etc/a", "etc/hard", "etc/link", "big"] {
            assert!(list.contains(&format!("squashfs-root/{name}\n")), "{list}");
        }
        let long = unsquashfs(&["-lls"], &sa);
        let lines: Vec<&str> = long
            .lines()
            .filter(|l| l.contains("squashfs-root"))
            .collect();
        assert_eq!(lines.len(), 12, "{long}");
        for line in lines {
            assert!(line.contains(" root/root "), "{line}");
            assert!(line.contains(" 1970-01-01 00:00 "), "{line}");
        }
        assert!(long.contains("drwxr-xr-x root/root"), "{long}");
        assert!(long.contains("-rw------- root/root"), "{long}");
    }

    #[tokio::test]
    async fn failure_reports_mksquashfs_output() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = mksquashfs(&missing, &dir.path().join("out.sqfs"))
            .await
            .unwrap_err();
        let SquashfsError::Failed { output, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(output.contains("missing"), "{output}");
    }

    #[test]
    fn flags() {
        let args = args(Path::new("/r"), Path::new("/o.sqfs"), 4);
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args.join(" "),
            "/r /o.sqfs -noappend -comp gzip -b 131072 -all-root -no-xattrs -reproducible \
             -mkfs-time 0 -all-time 0 -root-mode 755 -exit-on-error -no-progress -quiet \
             -processors 4"
        );
    }
}
