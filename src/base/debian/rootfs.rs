//! A root file system assembled from `.deb` data members, without running anything from it.
//!
//! Packages are unpacked in memory in the order given (the first package to ship a path keeps
//! it), with `/bin`, `/sbin` and `/lib*` merged into `/usr` as bookworm's debootstrap does.
//! Then [`Rootfs::finish`] writes what maintainer scripts would have left and a runnable image
//! needs (accounts, shells, the dpkg database, the CA bundle, the time zone), and
//! [`Rootfs::write_layer`] packs it as one reproducible gzip layer: entries sorted by path,
//! numeric owners, the packages' own mtimes, generated files at mtime 0, and
//! [`reproducible_gzip`] as every layer has.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path};

use crate::assemble::{HashWriter, reproducible_gzip};

/// Top-level directories that are links into `/usr` on a merged-usr system.
const MERGED_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Documentation a container does not need, left out as mmdebstrap's `path-exclude` would
/// (copyright files stay: licences travel with the binaries).
const EXCLUDED_PREFIXES: [&str; 4] = [
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/locale/",
];

/// Links `update-alternatives` would make in maintainer scripts, for the programs whose
/// generic name people call: (link, target), made when the target exists and the link does not.
const ALTERNATIVES: [(&str, &str); 4] = [
    ("usr/bin/awk", "/usr/bin/mawk"),
    ("usr/bin/which", "/usr/bin/which.debianutils"),
    ("usr/bin/w", "/usr/bin/w.procps"),
    ("usr/bin/pager", "/usr/bin/less"),
];

/// Control fields that describe the archive copy of a package, not an installed one.
const ARCHIVE_ONLY_FIELDS: [&str; 7] = [
    "Filename",
    "Size",
    "MD5sum",
    "SHA1",
    "SHA256",
    "SHA512",
    "Description-md5",
];

/// The most a single file in a package may hold once unpacked (the largest in Debian's
/// base sets is a few MiB; this guards against a hostile or corrupt archive).
const MAX_FILE_BYTES: u64 = 512 << 20;

/// The most all packages together may hold once unpacked (the tree is held in memory; the
/// Python base is about 100 MiB).
const MAX_TOTAL_BYTES: u64 = 1 << 30;

/// One path in the tree.
#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    /// A parent directory no package listed yet; the first package that lists it sets its
    /// mode and owner.
    implicit: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
}

/// A package unpacked into the tree, for the dpkg database.
#[derive(Debug)]
struct Installed {
    name: String,
    architecture: String,
    multi_arch_same: bool,
    control: String,
    /// The paths as the package ships them (`/bin/bash`, not `/usr/bin/bash`), as dpkg lists them.
    paths: Vec<String>,
}

/// The control fields of a package being added, from the signed index.
#[derive(Debug, Clone, Copy)]
pub struct PackageControl<'a> {
    /// The package name.
    pub name: &'a str,
    /// Its architecture (`amd64`, `arm64`, `all`).
    pub architecture: &'a str,
    /// Whether it is `Multi-Arch: same` (its dpkg file lists are named `name:arch`).
    pub multi_arch_same: bool,
    /// The index stanza, verbatim.
    pub stanza: &'a str,
}

/// A Debian root file system being assembled in memory.
#[derive(Debug)]
pub struct Rootfs {
    /// The Debian architecture (`amd64`, `arm64`).
    architecture: String,
    entries: BTreeMap<Vec<u8>, Entry>,
    installed: Vec<Installed>,
    total_bytes: u64,
}

impl Rootfs {
    /// An empty tree for `architecture`.
    pub fn new(architecture: &str) -> Rootfs {
        Rootfs {
            architecture: architecture.to_owned(),
            entries: BTreeMap::new(),
            installed: Vec::new(),
            total_bytes: 0,
        }
    }

    /// Unpacks `data` (a `.deb`'s data member) into the tree. Paths already present stay as
    /// they are; device nodes and FIFOs are skipped (a container runtime provides `/dev`).
    pub fn add_package<R: Read>(
        &mut self,
        control: PackageControl<'_>,
        data: &mut tar::Archive<R>,
    ) -> io::Result<()> {
        let mut paths = Vec::new();
        for entry in data.entries()? {
            let mut entry = entry?;
            let shipped = normalize(&entry.path_bytes())?;
            if shipped.is_empty() {
                continue;
            }
            if excluded(&shipped) {
                continue;
            }
            let header = entry.header();
            let mode = header.mode()? & 0o7777;
            let (uid, gid, mtime) = (header.uid()?, header.gid()?, header.mtime()?);
            let kind = match header.entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.size();
                    if size > MAX_FILE_BYTES {
                        return Err(too_big(control.name, &shipped));
                    }
                    self.total_bytes += size;
                    if self.total_bytes > MAX_TOTAL_BYTES {
                        return Err(too_big(control.name, &shipped));
                    }
                    let mut contents = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut contents)?;
                    Kind::File(contents)
                }
                tar::EntryType::Symlink => Kind::Symlink(
                    entry
                        .link_name_bytes()
                        .map(|target| target.into_owned())
                        .unwrap_or_default(),
                ),
                tar::EntryType::Link => {
                    let target = entry.link_name_bytes().unwrap_or_default();
                    let target = merged(&normalize(&target)?);
                    match self.entries.get(&target) {
                        Some(Entry {
                            kind: kind @ Kind::File(_),
                            ..
                        }) => kind.clone(),
                        _ => {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "{}: hard link {} points at {}, which is not a file before it",
                                    control.name,
                                    String::from_utf8_lossy(&shipped),
                                    String::from_utf8_lossy(&target)
                                ),
                            ));
                        }
                    }
                }
                _ => continue,
            };
            paths.push(format!("/{}", String::from_utf8_lossy(&shipped)));
            self.insert(
                merged(&shipped),
                Entry {
                    kind,
                    mode,
                    uid,
                    gid,
                    mtime,
                    implicit: false,
                },
            );
        }
        self.installed.push(Installed {
            name: control.name.to_owned(),
            architecture: control.architecture.to_owned(),
            multi_arch_same: control.multi_arch_same,
            control: control.stanza.to_owned(),
            paths,
        });
        Ok(())
    }

    /// Adds `path` unless a package shipped it, creating its parents as needed.
    fn insert(&mut self, path: Vec<u8>, entry: Entry) {
        self.parents(&path);
        match self.entries.get_mut(&path) {
            Some(existing) if existing.implicit && matches!(entry.kind, Kind::Dir) => {
                *existing = entry;
            }
            Some(_) => {}
            None => {
                self.entries.insert(path, entry);
            }
        }
    }

    fn parents(&mut self, path: &[u8]) {
        for (i, byte) in path.iter().enumerate() {
            if *byte == b'/' {
                self.entries
                    .entry(path[..i].to_vec())
                    .or_insert_with(|| generated(Kind::Dir, 0o755));
            }
        }
    }

    /// Sets `path` to a generated entry, replacing whatever is there.
    fn put(&mut self, path: &str, kind: Kind, mode: u32) {
        self.parents(path.as_bytes());
        self.entries
            .insert(path.as_bytes().to_vec(), generated(kind, mode));
    }

    /// Adds a generated entry unless `path` exists.
    fn put_missing(&mut self, path: &str, kind: Kind, mode: u32) {
        if !self.entries.contains_key(path.as_bytes()) {
            self.put(path, kind, mode);
        }
    }

    fn file(&self, path: &str) -> Option<&[u8]> {
        match self.entries.get(path.as_bytes()) {
            Some(Entry {
                kind: Kind::File(contents),
                ..
            }) => Some(contents),
            _ => None,
        }
    }

    fn exists(&self, path: &str) -> bool {
        self.entries.contains_key(path.as_bytes())
    }

    /// Writes what the skipped maintainer scripts (and debootstrap) would have left that a
    /// runnable image needs.
    pub fn finish(&mut self) {
        for dir in MERGED_DIRS {
            if self.exists(&format!("usr/{dir}")) {
                self.put(dir, Kind::Symlink(format!("usr/{dir}").into_bytes()), 0o777);
            }
        }
        self.alternatives();
        self.accounts();
        self.shells();
        self.certificates();
        self.time_zone();
        self.skeleton();
        self.dpkg_database();
    }

    /// The generic names of programs that several packages can provide.
    fn alternatives(&mut self) {
        for (link, target) in ALTERNATIVES {
            if self.exists(target.trim_start_matches('/')) {
                self.put_missing(link, Kind::Symlink(target.as_bytes().to_vec()), 0o777);
            }
        }
    }

    /// `/etc/passwd` and `/etc/group`: base-passwd's preinst copies its master files.
    fn accounts(&mut self) {
        const ROOT_ONLY: [(&str, &str); 2] = [
            ("passwd", "root:x:0:0:root:/root:/bin/bash\n"),
            ("group", "root:x:0:\n"),
        ];
        for (name, fallback) in ROOT_ONLY {
            let master = format!("usr/share/base-passwd/{name}.master");
            let contents = self
                .file(&master)
                .map_or_else(|| fallback.as_bytes().to_vec(), <[u8]>::to_vec);
            self.put_missing(&format!("etc/{name}"), Kind::File(contents), 0o644);
        }
    }

    /// `/etc/shells`, which debianutils' trigger would write: every shell present, under both
    /// of its merged-usr paths.
    fn shells(&mut self) {
        let mut text = String::from("# /etc/shells: valid login shells\n");
        for shell in ["sh", "bash", "rbash", "dash"] {
            if self.exists(&format!("usr/bin/{shell}")) {
                text.push_str(&format!("/bin/{shell}\n/usr/bin/{shell}\n"));
            }
        }
        self.put_missing("etc/shells", Kind::File(text.into_bytes()), 0o644);
    }

    /// The CA bundle `update-ca-certificates` would build from every certificate
    /// ca-certificates ships, and the links libssl looks for it under.
    fn certificates(&mut self) {
        let prefix = b"usr/share/ca-certificates/";
        let certificates: Vec<(Vec<u8>, Vec<u8>)> = self
            .entries
            .range(prefix.to_vec()..)
            .take_while(|(path, _)| path.starts_with(prefix))
            .filter(|(path, _)| path.ends_with(b".crt"))
            .filter_map(|(path, entry)| match &entry.kind {
                Kind::File(contents) => Some((path.clone(), contents.clone())),
                _ => None,
            })
            .collect();
        if certificates.is_empty() {
            return;
        }
        let mut bundle = Vec::new();
        let mut conf = Vec::new();
        for (path, contents) in &certificates {
            bundle.extend_from_slice(contents);
            if !contents.ends_with(b"\n") {
                bundle.push(b'\n');
            }
            conf.extend_from_slice(&path[prefix.len()..]);
            conf.push(b'\n');
        }
        self.put(
            "etc/ssl/certs/ca-certificates.crt",
            Kind::File(bundle),
            0o644,
        );
        self.put_missing("etc/ca-certificates.conf", Kind::File(conf), 0o644);
        // libssl's compiled-in defaults; the openssl package would ship these links.
        let bundle_link = || Kind::Symlink(b"/etc/ssl/certs/ca-certificates.crt".to_vec());
        self.put_missing("usr/lib/ssl/cert.pem", bundle_link(), 0o777);
        self.put_missing(
            "usr/lib/ssl/certs",
            Kind::Symlink(b"/etc/ssl/certs".to_vec()),
            0o777,
        );
    }

    /// UTC, as tzdata's postinst sets up a non-interactive install.
    fn time_zone(&mut self) {
        if self.exists("usr/share/zoneinfo/Etc/UTC") {
            self.put_missing(
                "etc/localtime",
                Kind::Symlink(b"/usr/share/zoneinfo/Etc/UTC".to_vec()),
                0o777,
            );
            self.put_missing("etc/timezone", Kind::File(b"Etc/UTC\n".to_vec()), 0o644);
        }
    }

    /// Directories and files base-files' postinst and a container runtime expect.
    fn skeleton(&mut self) {
        for (dir, mode) in [
            ("tmp", 0o1777),
            ("var/tmp", 0o1777),
            ("root", 0o700),
            ("run", 0o755),
            ("run/lock", 0o1777),
            ("opt", 0o755),
            ("srv", 0o755),
            ("mnt", 0o755),
            ("media", 0o755),
            ("home", 0o755),
            ("proc", 0o555),
            ("sys", 0o555),
            ("dev", 0o755),
        ] {
            self.put_missing(dir, Kind::Dir, mode);
        }
        self.put_missing("var/run", Kind::Symlink(b"/run".to_vec()), 0o777);
        self.put_missing("var/lock", Kind::Symlink(b"/run/lock".to_vec()), 0o777);
        for (target, source) in [
            ("etc/profile", "usr/share/base-files/profile"),
            ("root/.bashrc", "usr/share/base-files/dot.bashrc"),
            ("root/.profile", "usr/share/base-files/dot.profile"),
        ] {
            if let Some(contents) = self.file(source).map(<[u8]>::to_vec) {
                self.put_missing(target, Kind::File(contents), 0o644);
            }
        }
        self.put_missing(
            "etc/nsswitch.conf",
            Kind::File(NSSWITCH.as_bytes().to_vec()),
            0o644,
        );
        // Runtimes bind-mount their own over these; empty, so no host's content is baked in.
        for name in ["resolv.conf", "hostname", "hosts"] {
            self.put(&format!("etc/{name}"), Kind::File(Vec::new()), 0o644);
        }
    }

    /// `/var/lib/dpkg/status` and the per-package file lists, so dpkg, scanners and SBOM tools
    /// see what is installed.
    fn dpkg_database(&mut self) {
        let mut installed = std::mem::take(&mut self.installed);
        installed.sort_by(|a, b| a.name.cmp(&b.name));
        let mut status = String::new();
        for package in &installed {
            if !status.is_empty() {
                status.push('\n');
            }
            status.push_str(&installed_stanza(&package.control));
            let list_name = if package.multi_arch_same {
                format!("{}:{}", package.name, package.architecture)
            } else {
                package.name.clone()
            };
            let mut list = String::from("/.\n");
            for path in &package.paths {
                list.push_str(path);
                list.push('\n');
            }
            self.put(
                &format!("var/lib/dpkg/info/{list_name}.list"),
                Kind::File(list.into_bytes()),
                0o644,
            );
        }
        self.put(
            "var/lib/dpkg/status",
            Kind::File(status.into_bytes()),
            0o644,
        );
        self.put_missing("var/lib/dpkg/available", Kind::File(Vec::new()), 0o644);
        self.installed = installed;
    }

    /// The Debian architecture the tree is for.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// How many entries the tree has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Packs the tree as a gzip tar at `out` and returns the layer's digests.
    pub fn write_layer(&self, out: &Path) -> io::Result<WrittenLayer> {
        let file = BufWriter::new(File::create(out)?);
        let gzip = reproducible_gzip(HashWriter::new(file));
        let mut tar = tar::Builder::new(HashWriter::new(gzip));
        for (path, entry) in &self.entries {
            append(&mut tar, path, entry)?;
        }
        let (gzip, diff_hex, uncompressed_size) = tar.into_inner()?.finish();
        let (file, digest_hex, size) = gzip.finish()?.finish();
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(WrittenLayer {
            diff_id: format!("sha256:{diff_hex}"),
            digest: format!("sha256:{digest_hex}"),
            size,
            uncompressed_size,
        })
    }
}

/// A base layer written by [`Rootfs::write_layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenLayer {
    /// sha256 of the tar.
    pub diff_id: String,
    /// sha256 of the gzip blob.
    pub digest: String,
    /// Size of the gzip blob.
    pub size: u64,
    /// Size of the tar.
    pub uncompressed_size: u64,
}

/// Debian's default name service switch, which libc-bin's postinst installs.
const NSSWITCH: &str = "passwd:         files\ngroup:          files\nshadow:         files\n\
gshadow:        files\n\nhosts:          files dns\nnetworks:       files\n\n\
protocols:      db files\nservices:       db files\nethers:         db files\nrpc:            db files\n\n\
netgroup:       nis\n";

fn generated(kind: Kind, mode: u32) -> Entry {
    Entry {
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: 0,
        implicit: true,
    }
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &[u8], entry: &Entry) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(entry.mtime);
    let path = Path::new(std::ffi::OsStr::from_bytes(path));
    match &entry.kind {
        Kind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, path, io::empty())
        }
        Kind::File(contents) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(contents.len() as u64);
            tar.append_data(&mut header, path, contents.as_slice())
        }
        Kind::Symlink(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            tar.append_link(
                &mut header,
                path,
                Path::new(std::ffi::OsStr::from_bytes(target)),
            )
        }
    }
}

use std::os::unix::ffi::OsStrExt;

/// A tar path without `./`, leading or trailing slashes; `..` and absolute paths are refused.
fn normalize(raw: &[u8]) -> io::Result<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for component in Path::new(std::ffi::OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(part) => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part.as_bytes());
            }
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unsafe path {} in a package", String::from_utf8_lossy(raw)),
                ));
            }
        }
    }
    Ok(out)
}

/// `bin/x` → `usr/bin/x` (and `sbin`, `lib*`): where the file lives on a merged-usr system.
fn merged(path: &[u8]) -> Vec<u8> {
    let first = path.split(|b| *b == b'/').next().unwrap_or_default();
    if MERGED_DIRS.iter().any(|dir| dir.as_bytes() == first) {
        [b"usr/".as_slice(), path].concat()
    } else {
        path.to_vec()
    }
}

fn excluded(path: &[u8]) -> bool {
    EXCLUDED_PREFIXES.iter().any(|prefix| {
        path.starts_with(prefix.as_bytes())
            && !(prefix.starts_with("usr/share/doc") && path.ends_with(b"/copyright"))
    })
}

fn too_big(package: &str, path: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{package}: unpacking {} goes past kiln's size bound for base images",
            String::from_utf8_lossy(path)
        ),
    )
}

/// An index stanza as dpkg's status file has it: `Status` after `Package`, without the
/// fields that describe the archive copy.
fn installed_stanza(stanza: &str) -> String {
    let mut out = String::with_capacity(stanza.len() + 32);
    let mut skipping = false;
    for line in stanza.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        let field = line.split_once(':').map_or(line, |(name, _)| name);
        skipping = ARCHIVE_ONLY_FIELDS
            .iter()
            .any(|f| f.eq_ignore_ascii_case(field));
        if skipping {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if field.eq_ignore_ascii_case("Package") {
            out.push_str("Status: install ok installed\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(files: &[(&str, tar::EntryType, &[u8], u32)]) -> tar::Archive<io::Cursor<Vec<u8>>> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, contents, mode) in files {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(*mode);
            header.set_mtime(1_700_000_000);
            header.set_uid(0);
            header.set_gid(0);
            if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
                header.set_size(0);
                builder
                    .append_link(&mut header, path, std::str::from_utf8(contents).unwrap())
                    .unwrap();
            } else {
                header.set_size(contents.len() as u64);
                builder.append_data(&mut header, path, *contents).unwrap();
            }
        }
        tar::Archive::new(io::Cursor::new(builder.into_inner().unwrap()))
    }

    fn control<'a>(name: &'a str, stanza: &'a str) -> PackageControl<'a> {
        PackageControl {
            name,
            architecture: "amd64",
            multi_arch_same: false,
            stanza,
        }
    }

    fn sample() -> Rootfs {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let mut rootfs = Rootfs::new("amd64");
        rootfs
            .add_package(
                control(
                    "bash",
                    "Package: bash\nVersion: 5.2.15-2+b7\nFilename: pool/b/bash.deb\nSHA256: ab\nDescription: shell\n more text\n",
                ),
                &mut data(&[
                    ("./", Directory, b"", 0o755),
                    ("./bin/", Directory, b"", 0o755),
                    ("./bin/bash", Regular, b"ELF bash", 0o755),
                    ("./bin/rbash", Symlink, b"bash", 0o777),
                    ("./usr/share/doc/bash/README", Regular, b"docs", 0o644),
                    ("./usr/share/doc/bash/copyright", Regular, b"GPL", 0o644),
                    ("./usr/share/man/man1/bash.1.gz", Regular, b"man", 0o644),
                    ("./usr/share/base-passwd/passwd.master", Regular, b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/bin/false\n", 0o644),
                    ("./usr/share/ca-certificates/mozilla/B.crt", Regular, b"-----B-----\n", 0o644),
                    ("./usr/share/ca-certificates/mozilla/A.crt", Regular, b"-----A-----", 0o644),
                    ("./bin/sh-copy", Link, b"./bin/bash", 0o755),
                ]),
            )
            .unwrap();
        rootfs
            .add_package(
                control("dash", "Package: dash\nVersion: 0.5.12-2\n"),
                &mut data(&[
                    ("./bin/dash", Regular, b"ELF dash", 0o755),
                    ("./bin/sh", Symlink, b"dash", 0o777),
                    ("./bin/bash", Regular, b"not the first", 0o755),
                ]),
            )
            .unwrap();
        rootfs.finish();
        rootfs
    }

    #[test]
    fn merges_usr_keeps_the_first_package_and_drops_docs() {
        let rootfs = sample();
        assert_eq!(rootfs.file("usr/bin/bash"), Some(b"ELF bash".as_slice()));
        assert_eq!(rootfs.file("usr/bin/sh-copy"), Some(b"ELF bash".as_slice()));
        assert!(matches!(
            rootfs.entries.get(b"bin".as_slice()).map(|e| &e.kind),
            Some(Kind::Symlink(target)) if target == b"usr/bin"
        ));
        assert!(!rootfs.exists("usr/share/doc/bash/README"));
        assert!(!rootfs.exists("usr/share/man/man1/bash.1.gz"));
        assert!(rootfs.exists("usr/share/doc/bash/copyright"));
    }

    #[test]
    fn writes_what_the_scripts_would_have() {
        let rootfs = sample();
        let passwd = String::from_utf8(rootfs.file("etc/passwd").unwrap().to_vec()).unwrap();
        assert!(
            passwd.starts_with("root:x:0:0:root:/root:/bin/bash\n"),
            "{passwd}"
        );
        let shells = String::from_utf8(rootfs.file("etc/shells").unwrap().to_vec()).unwrap();
        assert!(
            shells.contains("/bin/sh\n") && shells.contains("/usr/bin/bash\n"),
            "{shells}"
        );
        assert_eq!(
            rootfs.file("etc/ssl/certs/ca-certificates.crt"),
            Some(b"-----A-----\n-----B-----\n".as_slice())
        );
        let status =
            String::from_utf8(rootfs.file("var/lib/dpkg/status").unwrap().to_vec()).unwrap();
        assert_eq!(
            status,
            "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b7\nDescription: shell\n more text\n\n\
             Package: dash\nStatus: install ok installed\nVersion: 0.5.12-2\n"
        );
        let list = String::from_utf8(rootfs.file("var/lib/dpkg/info/bash.list").unwrap().to_vec())
            .unwrap();
        assert!(list.starts_with("/.\n/bin\n/bin/bash\n"), "{list}");
        assert_eq!(rootfs.entries[b"tmp".as_slice()].mode, 0o1777);
    }

    #[test]
    fn the_layer_is_a_function_of_the_packages() {
        let dir = tempfile::tempdir().unwrap();
        let first = sample().write_layer(&dir.path().join("a.tar.gz")).unwrap();
        let second = sample().write_layer(&dir.path().join("b.tar.gz")).unwrap();
        assert_eq!(first, second);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
            File::open(dir.path().join("a.tar.gz")).unwrap(),
        ));
        let paths: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        assert!(paths.contains(&"usr/bin/dash".to_owned()));
    }

    #[test]
    fn refuses_paths_that_climb_out() {
        // tar's builder refuses `..`, so the name is written into the header by hand.
        let mut header = tar::Header::new_old();
        let name = b"./../etc/passwd";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(1);
        header.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&header, b"x".as_slice()).unwrap();
        let mut archive = tar::Archive::new(io::Cursor::new(builder.into_inner().unwrap()));
        let mut rootfs = Rootfs::new("amd64");
        let err = rootfs
            .add_package(control("evil", "Package: evil\n"), &mut archive)
            .unwrap_err();
        assert!(err.to_string().contains("unsafe path"), "{err}");
    }
}
