//! Checks an uploaded build context (the gzip'd tar of a remote build's `%files` sources)
//! before kiln keeps it: it must be a tar, and unpacking it must stay within the configured
//! bytes, entries and expansion over its compressed size, so a small upload cannot become a
//! decompression bomb on the build host. The check reads the archive once, writes nothing, and
//! stops at the first limit passed, so a bomb costs at most the limits' worth of decompressing.

use std::cell::Cell;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

/// What any context may unpack to, whatever its expansion: tiny archives expand a lot (GNU tar
/// pads to 10 KiB records of zeros) and are harmless.
const EXPANSION_FLOOR: u64 = 16 << 20;

/// How much a build context may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextLimits {
    /// Most bytes of tar (headers included) it may unpack to.
    pub max_unpacked: u64,
    /// Most tar entries.
    pub max_entries: u64,
    /// Most unpacked bytes per compressed byte, beyond the first 16 MiB.
    pub max_expansion: u64,
}

/// What a context that passed holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextSummary {
    /// Tar entries.
    pub entries: u64,
    /// Bytes of tar.
    pub unpacked: u64,
}

/// Why a build context was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("the build context is not a gzip'd tar: {0}")]
    NotTar(String),
    #[error(
        "the build context unpacks to more than {limit} bytes, the most kiln takes \
         (`api.context_max_unpacked_bytes`); send fewer or smaller %files"
    )]
    TooLarge { limit: u64 },
    #[error(
        "the build context's {compressed} bytes unpack to more than {ratio} times as much, the \
         most kiln takes (`api.context_max_expansion`); it looks like a decompression bomb"
    )]
    Expands { compressed: u64, ratio: u64 },
    #[error(
        "the build context holds more than {limit} files and directories, the most kiln takes \
         (`api.context_max_files`)"
    )]
    TooManyEntries { limit: u64 },
}

/// Reads the gzip'd tar at `path` to its end without writing anything, within `limits`.
pub fn check_context(path: &Path, limits: ContextLimits) -> Result<ContextSummary, ContextError> {
    let not_tar = |err: std::io::Error| ContextError::NotTar(err.to_string());
    let file = std::fs::File::open(path).map_err(not_tar)?;
    let compressed = file.metadata().map_err(not_tar)?.len();
    let budget = limits.max_unpacked.min(
        compressed
            .saturating_mul(limits.max_expansion)
            .max(EXPANSION_FLOOR),
    );
    let read = Rc::new(Cell::new(0u64));
    let counter = Counting {
        inner: flate2::read::GzDecoder::new(file),
        read: Rc::clone(&read),
        budget,
    };
    let mut archive = tar::Archive::new(counter);
    let mut entries = 0u64;
    let result = (|| {
        for entry in archive.entries()? {
            entry?;
            entries += 1;
            if entries > limits.max_entries {
                return Ok(Some(ContextError::TooManyEntries {
                    limit: limits.max_entries,
                }));
            }
        }
        Ok::<_, std::io::Error>(None)
    })();
    if read.get() > budget {
        return Err(if read.get() > limits.max_unpacked {
            ContextError::TooLarge {
                limit: limits.max_unpacked,
            }
        } else {
            ContextError::Expands {
                compressed,
                ratio: limits.max_expansion,
            }
        });
    }
    match result {
        Ok(Some(refused)) => Err(refused),
        Ok(None) => Ok(ContextSummary {
            entries,
            unpacked: read.get(),
        }),
        Err(err) => Err(not_tar(err)),
    }
}

/// A reader that counts what passes and fails once more than `budget` bytes have.
struct Counting<R> {
    inner: R,
    read: Rc<Cell<u64>>,
    budget: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.read.get().saturating_add(n as u64);
        self.read.set(total);
        if total > self.budget {
            return Err(std::io::Error::other("the unpacking limit was passed"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzip'd tar at `dir/name` with `files` (name, size in zero bytes).
    fn archive(dir: &Path, name: &str, files: &[(&str, u64)]) -> std::path::PathBuf {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).unwrap();
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, size) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(*size);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, std::io::repeat(0).take(*size))
                .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        path
    }

    const GENEROUS: ContextLimits = ContextLimits {
        max_unpacked: 1 << 30,
        max_entries: 100,
        max_expansion: 2000,
    };

    #[test]
    fn contexts_within_the_limits_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = archive(dir.path(), "ok.tar.gz", &[("a", 10), ("b/c", 2000)]);
        let summary = check_context(&path, GENEROUS).unwrap();
        assert_eq!(summary.entries, 2);
        assert!(summary.unpacked >= 2010, "{summary:?}");
        // A small archive expands far more than tenfold, and is fine.
        let strict = ContextLimits {
            max_expansion: 10,
            ..GENEROUS
        };
        assert!(check_context(&path, strict).is_ok());
    }

    #[test]
    fn each_limit_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let big = archive(dir.path(), "big.tar.gz", &[("zeros", 2 * EXPANSION_FLOOR)]);
        let small = ContextLimits {
            max_unpacked: 1 << 20,
            ..GENEROUS
        };
        assert_eq!(
            check_context(&big, small),
            Err(ContextError::TooLarge { limit: 1 << 20 })
        );
        let tight = ContextLimits {
            max_expansion: 10,
            ..GENEROUS
        };
        let compressed = std::fs::metadata(&big).unwrap().len();
        assert_eq!(
            check_context(&big, tight),
            Err(ContextError::Expands {
                compressed,
                ratio: 10
            })
        );
        let names: Vec<String> = (0..5).map(|n| format!("f{n}")).collect();
        let files: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        let many = archive(dir.path(), "many.tar.gz", &files);
        let few = ContextLimits {
            max_entries: 4,
            ..GENEROUS
        };
        assert_eq!(
            check_context(&many, few),
            Err(ContextError::TooManyEntries { limit: 4 })
        );
        let junk = dir.path().join("junk.tar.gz");
        std::fs::write(&junk, b"not gzip at all").unwrap();
        assert!(matches!(
            check_context(&junk, GENEROUS),
            Err(ContextError::NotTar(_))
        ));
    }
}
