//! Flattening OCI layers into one directory tree, the root file system of a SIF image.
//!
//! A SIF holds a single squashfs of the whole image, so the layers kiln pushes as an OCI image are
//! applied bottom to top into a directory that `mksquashfs` then packs. Layer tars come from base
//! images (any registry) as well as from kiln, so every entry is treated as hostile: nothing is
//! ever written outside the root, and no symlink a layer created is ever followed.
//!
//! What is kept: paths, types, contents, symlink targets, hard links and permission bits
//! (setuid, setgid and sticky included). Owners and times are dropped, because the squashfs is
//! made root-owned with fixed times. Devices and FIFOs are skipped (counted in
//! [`FlattenStats::skipped_devices`]): kiln runs unprivileged and cannot create device nodes, and
//! the runtime bind-mounts the host's `/dev` anyway.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, Permissions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;

/// Permission bits kept from a tar header: rwx for all, setuid, setgid, sticky.
const MODE_MASK: u32 = 0o7777;
/// Added to every file's mode so that an unprivileged `mksquashfs` can read it (e.g. RHEL's
/// `/etc/shadow` is `0000`). Harmless: the squashfs is root-owned, and root ignores these bits.
const FILE_OWNER_BITS: u32 = 0o400;
/// Added to every directory's final mode, for the same reason (`mksquashfs` lists and enters it).
const DIR_OWNER_BITS: u32 = 0o500;
/// Directories stay owner-writable until the end, so later layers can write into them.
const DIR_WORK_BITS: u32 = 0o700;
/// The mode of parent directories a layer implies without an entry of their own.
const IMPLIED_DIR_MODE: u32 = 0o755;

/// What [`flatten`] extracted, counted over all layers (an entry replaced later still counts).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlattenStats {
    /// Regular files written.
    pub files: u64,
    /// Directory entries applied.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links created.
    pub hardlinks: u64,
    /// Whiteout entries (`.wh.<name>` and opaque `.wh..wh..opq`) applied.
    pub whiteouts: u64,
    /// Device and FIFO entries skipped, since kiln cannot create them unprivileged.
    pub skipped_devices: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Why flattening failed. Entry problems are wrapped in [`FlattenError::Layer`], naming the layer.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    /// The target exists but is not an empty directory, so the result would mix in stale files.
    #[error("{} must be an empty or absent directory", path.display())]
    RootNotEmpty {
        /// The target directory.
        path: PathBuf,
    },
    /// A file-system operation failed (or the layer could not be read or decompressed).
    #[error("could not {action} {}", path.display())]
    Io {
        /// What was being done, as a verb phrase.
        action: &'static str,
        /// The path concerned (on disk, or the layer file).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A layer entry would escape the root, or does not fit the tree built so far.
    #[error("layer entry {}: {reason}", path.display())]
    Invalid {
        /// The entry's path as it appears in the layer.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The layer is compressed with something other than gzip.
    #[error("layer {} is zstd-compressed; only gzip and uncompressed layers are supported", path.display())]
    Zstd {
        /// The layer file.
        path: PathBuf,
    },
    /// Something in a layer failed; the source says what.
    #[error("could not apply layer {}", layer.display())]
    Layer {
        /// The layer file.
        layer: PathBuf,
        /// What failed.
        #[source]
        source: Box<FlattenError>,
    },
}

type Result<T, E = FlattenError> = std::result::Result<T, E>;

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FlattenError {
    let path = path.to_path_buf();
    move |source| FlattenError::Io {
        action,
        path,
        source,
    }
}

fn invalid(path: &Path, reason: &'static str) -> FlattenError {
    FlattenError::Invalid {
        path: path.to_path_buf(),
        reason,
    }
}

/// Applies the OCI layer tarballs `layers` (bottom first; gzip or plain tar, detected by magic)
/// into `root`, which must be empty or absent, and returns what was extracted.
///
/// Whiteouts follow the OCI image spec: `.wh.<name>` removes `<name>` as lower layers left it,
/// and `.wh..wh..opq` empties its directory of everything lower layers put there; neither is
/// extracted, and neither touches what the same layer wrote (an opaque marker after entries
/// inside a subdirectory keeps that subdirectory, lower contents included). An entry replaces
/// whatever is at its path, except that a directory entry over a directory keeps the contents;
/// a skipped device or FIFO still removes what was at its path.
///
/// Refused (an error, nothing written outside `root`): absolute paths, `..` components, paths
/// through a symlink (even one pointing inside the root: layers produced by docker, buildkit
/// and kiln never contain such paths, so one is a sign of a hostile layer, and refusing is
/// simpler to get right than resolving), hard links to anything but an already extracted file
/// or symlink, and entry types other than files, directories, links, devices and FIFOs.
/// A leading `./` is accepted; the root entry itself (`./`) is ignored, since the squashfs
/// step fixes the root's mode.
///
/// Layers are streamed, never held in memory. Directory modes are applied in a last pass,
/// deepest first, so read-only directories can still receive later entries.
pub fn flatten(layers: &[PathBuf], root: &Path) -> Result<FlattenStats> {
    match fs::symlink_metadata(root) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(root).map_err(io_err("read", root))?;
            if entries.next().is_some() {
                return Err(FlattenError::RootNotEmpty {
                    path: root.to_path_buf(),
                });
            }
        }
        Ok(_) => {
            return Err(FlattenError::RootNotEmpty {
                path: root.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(root).map_err(io_err("create", root))?;
        }
        Err(e) => return Err(io_err("read", root)(e)),
    }
    let mut flattener = Flattener {
        root,
        stats: FlattenStats::default(),
        dir_modes: BTreeMap::new(),
        written: HashSet::new(),
    };
    for layer in layers {
        flattener
            .apply(layer)
            .map_err(|source| FlattenError::Layer {
                layer: layer.clone(),
                source: Box::new(source),
            })?;
    }
    flattener.fix_dir_modes()?;
    Ok(flattener.stats)
}

struct Flattener<'a> {
    root: &'a Path,
    stats: FlattenStats,
    /// Final modes of the directories on disk, by relative path. Removing a directory removes
    /// its descendants here too, so every key is a real directory under real directories.
    dir_modes: BTreeMap<PathBuf, u32>,
    /// Relative paths the current layer wrote, with their ancestors: whiteouts spare them.
    written: HashSet<PathBuf>,
}

impl Flattener<'_> {
    fn apply(&mut self, layer: &Path) -> Result<()> {
        let mut reader = BufReader::new(File::open(layer).map_err(io_err("open", layer))?);
        let magic = reader.fill_buf().map_err(io_err("read", layer))?;
        let input: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(MultiGzDecoder::new(reader))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            return Err(FlattenError::Zstd {
                path: layer.to_path_buf(),
            });
        } else {
            Box::new(reader)
        };
        self.written.clear();
        let mut archive = tar::Archive::new(input);
        for entry in archive.entries().map_err(io_err("read", layer))? {
            let mut entry = entry.map_err(io_err("read", layer))?;
            let name = entry.path().map_err(io_err("read", layer))?.into_owned();
            let Some(rel) = relative(&name)? else {
                continue;
            };
            self.entry(&mut entry, &name, &rel)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>, name: &Path, rel: &Path) -> Result<()> {
        let file_name = rel.file_name().map_or(&[][..], OsStr::as_bytes);
        let parent = rel.parent().unwrap_or(Path::new(""));
        if let Some(hidden) = file_name.strip_prefix(b".wh.") {
            return self.whiteout(name, parent, hidden);
        }
        self.check_dirs(name, parent, true)?;
        for ancestor in rel.ancestors() {
            self.written.insert(ancestor.to_path_buf());
        }
        let path = self.root.join(rel);
        let header = entry.header();
        let mode = header.mode().map_err(io_err("read the mode of", name))? & MODE_MASK;
        let kind = header.entry_type();
        match kind {
            tar::EntryType::Directory => {
                let existing = fs::symlink_metadata(&path);
                if !existing.as_ref().is_ok_and(fs::Metadata::is_dir) {
                    self.remove(rel)?;
                    fs::create_dir(&path).map_err(io_err("create", &path))?;
                }
                set_mode(&path, mode | DIR_WORK_BITS)?;
                self.dir_modes.insert(rel.to_path_buf(), mode);
                self.stats.dirs += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.remove(rel)?;
                let mut file = File::options()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_err("create", &path))?;
                self.stats.bytes += io::copy(entry, &mut file).map_err(io_err("extract", &path))?;
                file.set_permissions(Permissions::from_mode(mode | FILE_OWNER_BITS))
                    .map_err(io_err("set the mode of", &path))?;
                self.stats.files += 1;
            }
            tar::EntryType::Symlink => {
                let target = link_name(entry, name)?;
                self.remove(rel)?;
                std::os::unix::fs::symlink(&target, &path).map_err(io_err("create", &path))?;
                self.stats.symlinks += 1;
            }
            tar::EntryType::Link => {
                let target = link_name(entry, name)?;
                let target =
                    relative(&target)?.ok_or_else(|| invalid(name, "links to the root"))?;
                self.check_dirs(name, target.parent().unwrap_or(Path::new("")), false)?;
                let source = self.root.join(&target);
                match fs::symlink_metadata(&source) {
                    Ok(meta) if !meta.is_dir() => {}
                    _ => return Err(invalid(name, "is a hard link to no extracted file")),
                }
                if target != rel {
                    self.remove(rel)?;
                    fs::hard_link(&source, &path).map_err(io_err("link", &path))?;
                }
                self.stats.hardlinks += 1;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.remove(rel)?;
                self.stats.skipped_devices += 1;
            }
            tar::EntryType::XGlobalHeader => {}
            _ => return Err(invalid(name, "has an unsupported entry type")),
        }
        Ok(())
    }

    /// Applies `.wh.<hidden>` found in directory `parent`.
    fn whiteout(&mut self, name: &Path, parent: &Path, hidden: &[u8]) -> Result<()> {
        if hidden.starts_with(b".wh.") {
            // `.wh..wh..opq`, or other aufs bookkeeping (`.wh..wh.plnk`), never extracted.
            if hidden != b".wh..opq" {
                return Ok(());
            }
            self.stats.whiteouts += 1;
            if !self.check_dirs(name, parent, false)? {
                return Ok(());
            }
            let dir = self.root.join(parent);
            for child in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
                let child = parent.join(child.map_err(io_err("read", &dir))?.file_name());
                if !self.written.contains(&child) {
                    self.remove(&child)?;
                }
            }
            return Ok(());
        }
        if matches!(hidden, b"" | b"." | b"..") {
            return Err(invalid(name, "is a whiteout of no file name"));
        }
        self.stats.whiteouts += 1;
        let target = parent.join(OsStr::from_bytes(hidden));
        if self.check_dirs(name, parent, false)? && !self.written.contains(&target) {
            self.remove(&target)?;
        }
        Ok(())
    }

    /// Checks that every component of `dir` (relative) is a real directory, never a symlink.
    /// Missing ones are created when `create`; otherwise returns whether `dir` exists.
    fn check_dirs(&mut self, name: &Path, dir: &Path, create: bool) -> Result<bool> {
        let mut rel = PathBuf::new();
        for component in dir.components() {
            rel.push(component);
            let path = self.root.join(&rel);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.is_symlink() => {
                    return Err(invalid(name, "goes through a symlink"));
                }
                Ok(_) => return Err(invalid(name, "goes through a non-directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&path).map_err(io_err("create", &path))?;
                    set_mode(&path, IMPLIED_DIR_MODE | DIR_WORK_BITS)?;
                    self.dir_modes.insert(rel.clone(), IMPLIED_DIR_MODE);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_err("read", &path)(e)),
            }
        }
        Ok(true)
    }

    /// Removes whatever is at `rel` (a directory with its contents), if anything.
    fn remove(&mut self, rel: &Path) -> Result<()> {
        let path = self.root.join(rel);
        let removed = match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                self.dir_modes.retain(|dir, _| !dir.starts_with(rel));
                fs::remove_dir_all(&path)
            }
            Ok(_) => fs::remove_file(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        removed.map_err(io_err("remove", &path))
    }

    /// Gives every directory its final mode, deepest first, so no directory is made read-only
    /// before its children are done.
    fn fix_dir_modes(&self) -> Result<()> {
        let mut dirs: Vec<_> = self.dir_modes.iter().collect();
        dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
        for (rel, mode) in dirs {
            set_mode(&self.root.join(rel), mode | DIR_OWNER_BITS)?;
        }
        Ok(())
    }
}

/// The entry path relative to the root: `None` for the root itself; absolute paths and `..`
/// are refused.
fn relative(name: &Path) -> Result<Option<PathBuf>> {
    let mut rel = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(name, "is an absolute path"));
            }
            Component::ParentDir => return Err(invalid(name, "contains `..`")),
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

fn link_name<R: Read>(entry: &tar::Entry<R>, name: &Path) -> Result<PathBuf> {
    match entry.link_name() {
        Ok(Some(target)) => Ok(target.into_owned()),
        Ok(None) => Err(invalid(name, "is a link without a target")),
        Err(e) => Err(io_err("read the link target of", name)(e)),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(io_err("set the mode of", path))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    /// One tar entry, written raw so hostile names are possible.
    enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, u32, &'a str),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
        Fifo(&'a str),
    }

    fn tar(entries: &[E<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            let (kind, name, mode, link, data) = match *entry {
                E::Dir(n, m) => (tar::EntryType::Directory, n, m, "", ""),
                E::File(n, m, d) => (tar::EntryType::Regular, n, m, "", d),
                E::Symlink(n, l) => (tar::EntryType::Symlink, n, 0o777, l, ""),
                E::Hardlink(n, l) => (tar::EntryType::Link, n, 0o644, l, ""),
                E::Fifo(n) => (tar::EntryType::Fifo, n, 0o644, "", ""),
            };
            let mut header = tar::Header::new_gnu();
            header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_link_name_literal(link).unwrap();
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_uid(1234);
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data.as_bytes()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// Writes the layers into `dir` and flattens them into `dir/root`.
    fn run(dir: &Path, layers: &[Vec<u8>]) -> (PathBuf, Result<FlattenStats>) {
        let paths: Vec<PathBuf> = layers
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let path = dir.join(format!("layer{i}"));
                fs::write(&path, bytes).unwrap();
                path
            })
            .collect();
        let root = dir.join("root");
        let result = flatten(&paths, &root);
        (root, result)
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn applies_layers_with_whiteouts_links_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let lower = tar(&[
            E::Dir("./", 0o755),
            E::Dir("./bin/", 0o755),
            E::File("./bin/tool", 0o4755, "#!/bin/sh\n"),
            E::File("etc/gone", 0o644, "x"),
            E::File("etc/replaced", 0o644, "old"),
            E::Dir("opt/", 0o755),
            E::File("opt/a", 0o644, "a"),
            E::Dir("opt/sub/", 0o755),
            E::File("opt/sub/b", 0o644, "b"),
            E::Dir("ro/", 0o555),
            E::Dir("tmp/", 0o1777),
            E::File("shadow", 0o000, "secret"),
            E::Symlink("link", "bin/tool"),
            E::Dir("was-dir/", 0o755),
            E::File("was-dir/f", 0o644, "f"),
            E::Fifo("dev/fifo"),
        ]);
        let upper = tar(&[
            E::Dir("etc/", 0o750),
            E::File("etc/.wh.gone", 0o644, ""),
            E::File("etc/replaced", 0o600, "new"),
            E::Dir("opt/", 0o755),
            E::File("opt/-kept", 0o644, "written before the opaque marker"),
            E::File("opt/.wh..wh..opq", 0o644, ""),
            E::File("opt/c", 0o644, "c"),
            E::File("ro/new", 0o644, "into a read-only dir"),
            E::Hardlink("bin/hard", "./bin/tool"),
            E::Symlink("was-dir", "/elsewhere"),
            E::File("link", 0o644, "no longer a symlink"),
        ]);
        let (root, result) = run(dir.path(), &[gzip(&lower), upper]);
        let stats = result.unwrap();
        assert_eq!(
            stats,
            FlattenStats {
                files: 12,
                dirs: 8,
                symlinks: 2,
                hardlinks: 1,
                whiteouts: 2,
                skipped_devices: 1,
                bytes: 10 + 1 + 3 + 1 + 1 + 6 + 1 + 3 + 32 + 1 + 20 + 19,
            }
        );
        assert!(!root.join("etc/gone").exists());
        assert_eq!(read(&root.join("etc/replaced")), "new");
        assert_eq!(mode(&root.join("etc/replaced")), 0o600);
        assert_eq!(mode(&root.join("etc")), 0o750);
        let mut opt: Vec<_> = fs::read_dir(root.join("opt"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        opt.sort();
        assert_eq!(opt, ["-kept", "c"]);
        assert_eq!(read(&root.join("ro/new")), "into a read-only dir");
        assert_eq!(mode(&root.join("ro")), 0o555);
        assert_eq!(mode(&root.join("tmp")), 0o1777);
        assert_eq!(mode(&root.join("bin/tool")), 0o4755);
        assert_eq!(
            mode(&root.join("shadow")),
            0o400,
            "owner-readable for mksquashfs"
        );
        let tool = fs::metadata(root.join("bin/tool")).unwrap();
        assert_eq!(tool.nlink(), 2);
        assert_eq!(
            tool.ino(),
            fs::metadata(root.join("bin/hard")).unwrap().ino()
        );
        assert_eq!(
            fs::read_link(root.join("was-dir")).unwrap(),
            Path::new("/elsewhere")
        );
        assert!(fs::symlink_metadata(root.join("link")).unwrap().is_file());
        assert!(fs::symlink_metadata(root.join("dev")).unwrap().is_dir());
        assert!(!root.join("dev/fifo").exists());
        assert!(!root.join("etc/.wh.gone").exists());
    }

    #[test]
    fn whiteouts_spare_the_same_layer_and_opaque_spares_nothing_lower() {
        let dir = tempfile::tempdir().unwrap();
        let lower = tar(&[E::File("d/x", 0o644, "x"), E::File("d/sub/y", 0o644, "y")]);
        let upper = tar(&[
            E::File("d/sub/z", 0o644, "z"),
            E::File("d/.wh..wh..opq", 0o644, ""),
            E::File("d/new", 0o644, "n"),
            E::File("d/.wh.new", 0o644, ""),
            E::File("missing/.wh.thing", 0o644, ""),
        ]);
        let (root, result) = run(dir.path(), &[lower, upper]);
        result.unwrap();
        assert!(!root.join("d/x").exists());
        assert!(root.join("d/sub/z").exists());
        assert!(root.join("d/new").exists());
        assert!(!root.join("missing").exists());
    }

    #[test]
    fn refuses_hostile_entries_without_writing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let escape = format!("/tmp/kiln-flatten-escape-{}", std::process::id());
        let outside_link = outside.to_str().unwrap().to_owned();
        let cases: Vec<Vec<Vec<u8>>> = vec![
            vec![tar(&[E::File("../evil", 0o644, "x")])],
            vec![tar(&[E::File("a/../../evil", 0o644, "x")])],
            vec![tar(&[E::File("/evil", 0o644, "x")])],
            vec![tar(&[
                E::Symlink("a", "/"),
                E::File(&format!("a{escape}"), 0o644, "x"),
            ])],
            vec![
                tar(&[E::Symlink("a", &outside_link)]),
                tar(&[E::File("a/x", 0o644, "x")]),
            ],
            vec![tar(&[
                E::Symlink("a", &outside_link),
                E::Dir("a/sub/", 0o755),
            ])],
            vec![tar(&[
                E::Symlink("a", &outside_link),
                E::File("a/.wh.x", 0o644, ""),
            ])],
            vec![tar(&[E::File(".wh...", 0o644, "")])],
            vec![tar(&[E::Hardlink("h", "../etc/passwd")])],
            vec![tar(&[E::Hardlink("h", "/etc/passwd")])],
            vec![tar(&[E::Hardlink("h", "not-extracted")])],
        ];
        fs::write(outside.join("x"), "keep").unwrap();
        for (i, layers) in cases.iter().enumerate() {
            let case = dir.path().join(format!("case{i}"));
            fs::create_dir(&case).unwrap();
            let (_, result) = run(&case, layers);
            let err = result.expect_err(&format!("case {i} must fail"));
            assert!(
                matches!(&err, FlattenError::Layer { source, .. } if matches!(**source, FlattenError::Invalid { .. })),
                "case {i}: {err:?}"
            );
        }
        assert!(!dir.path().join("evil").exists());
        assert!(!Path::new("/evil").exists());
        assert!(!Path::new(&escape).exists());
        assert_eq!(read(&outside.join("x")), "keep");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    }

    #[test]
    fn needs_an_empty_root_and_refuses_zstd() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("stale"), "").unwrap();
        let err = flatten(&[], dir.path()).unwrap_err();
        assert!(matches!(err, FlattenError::RootNotEmpty { .. }), "{err:?}");

        let dir = tempfile::tempdir().unwrap();
        let (_, result) = run(dir.path(), &[vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0]]);
        let err = result.unwrap_err();
        assert!(
            matches!(&err, FlattenError::Layer { source, .. } if matches!(**source, FlattenError::Zstd { .. })),
            "{err:?}"
        );
    }
}
