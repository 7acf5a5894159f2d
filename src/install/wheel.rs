//! Installing one Python wheel (PEP 427) into a staging root, natively: no pip runs in a build.
//!
//! The whole wheel is checked before anything is written: entry names that could leave `root`,
//! symlinks, files missing from `RECORD`, a foreign `Wheel-Version` and entry points that would
//! become bad file names or code are refused up front. Contents are checked against `RECORD`
//! as they are written. What lands depends only on the wheel's bytes and the [`PythonLayout`],
//! so a wheel gives the same files on any host. No `.pyc` is compiled. After an error `root`
//! may hold part of the wheel and should be discarded.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use zip::ZipArchive;
use zip::result::ZipError;

/// Where a Python installation in the image keeps things, as absolute paths in the image:
/// base images differ (Debian's `dist-packages`, conda's prefix) and the host's interpreter
/// must never be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonLayout {
    /// Shebang of scripts, e.g. `/usr/bin/python3`.
    pub interpreter: PathBuf,
    /// Where purelib and platlib go, e.g. `/usr/local/lib/python3.11/dist-packages`.
    pub site_packages: PathBuf,
    /// Where scripts and entry-point launchers go, e.g. `/usr/local/bin`.
    pub scripts: PathBuf,
    /// The prefix `.data/data/` goes to, e.g. `/usr/local`.
    pub data: PathBuf,
    /// `.data/headers/` goes to `<headers>/<name>/`, e.g. `/usr/local/include/python3.11`.
    pub headers: PathBuf,
}

/// What a wheel put into `root`, so callers can report it and tell layers apart by content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledWheel {
    /// The distribution's name as its METADATA spells it.
    pub name: String,
    /// The distribution's version from its METADATA.
    pub version: String,
    /// Every file written, relative to `root`, sorted.
    pub files: Vec<PathBuf>,
    /// The license METADATA declares: `License-Expression` (an SPDX expression, metadata 2.4),
    /// else the first line of the free-text `License`.
    pub license: Option<String>,
}

/// Why a wheel was not installed; every message names the wheel, since a request installs many.
#[derive(Debug, thiserror::Error)]
pub enum WheelError {
    /// The file is not a zip archive, or one of its entries cannot be opened.
    #[error("wheel {}: cannot read the zip archive", wheel.display())]
    Zip {
        /// The wheel file.
        wheel: PathBuf,
        /// What the zip reader found.
        #[source]
        source: ZipError,
    },
    /// An entry's contents could not be decompressed (a CRC mismatch, too).
    #[error("wheel {}: cannot read {entry}", wheel.display())]
    Read {
        /// The wheel file.
        wheel: PathBuf,
        /// The entry's name in the archive.
        entry: String,
        /// What decompressing reported.
        #[source]
        source: io::Error,
    },
    /// The wheel breaks the format (dist-info, WHEEL, METADATA, RECORD), or the layout is bad.
    #[error("wheel {}: {reason}", wheel.display())]
    Invalid {
        /// The wheel file.
        wheel: PathBuf,
        /// What is wrong, for people.
        reason: String,
    },
    /// An entry that could write outside its destination.
    #[error("wheel {}: refusing entry {entry:?}: {reason}", wheel.display())]
    Unsafe {
        /// The wheel file.
        wheel: PathBuf,
        /// The entry's name in the archive.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// RECORD does not vouch for an entry's contents.
    #[error("wheel {}: {entry}: {reason}", wheel.display())]
    Record {
        /// The wheel file.
        wheel: PathBuf,
        /// The entry's name in the archive.
        entry: String,
        /// How contents and RECORD differ.
        reason: String,
    },
    /// An entry point whose name or target would become a bad file name or code.
    #[error("wheel {}: refusing entry point {line:?}", wheel.display())]
    EntryPoint {
        /// The wheel file.
        wheel: PathBuf,
        /// The line of `entry_points.txt`.
        line: String,
    },
    /// Writing into the staging root failed.
    #[error("wheel {}: cannot write {}", wheel.display(), path.display())]
    Write {
        /// The wheel file.
        wheel: PathBuf,
        /// The file or directory, relative to `root`.
        path: PathBuf,
        /// What the file system reported.
        #[source]
        source: io::Error,
    },
}

/// Installs `wheel` into `root`, which stands for the image's `/`, placed by `layout`.
pub fn install_wheel(
    wheel: &Path,
    layout: &PythonLayout,
    root: &Path,
) -> Result<InstalledWheel, WheelError> {
    let mut job = Job::new(wheel, layout, root)?;
    let file = File::open(wheel).map_err(|err| job.zip(ZipError::Io(err)))?;
    let mut archive = ZipArchive::new(file).map_err(|err| job.zip(err))?;
    let entries = job.list_entries(&mut archive)?;
    let stem = job.dist_info_stem(&entries)?;
    let dist_info = job.read_dist_info(&mut archive, &entries, &stem)?;
    // Everything is checked before the first write.
    for step in &job.plan(&entries, &stem, &dist_info)? {
        job.install_entry(&mut archive, step)?;
    }
    for entry_point in &dist_info.entry_points {
        let script = job.scripts.join(&entry_point.script);
        let launcher = launcher(&layout.interpreter, entry_point);
        job.write_generated(&script, launcher.as_bytes(), true)?;
    }
    let dir = job.site.join(format!("{stem}.dist-info"));
    job.write_generated(&dir.join("INSTALLER"), b"kiln\n", false)?;
    let files = job.write_record(&dir.join("RECORD"))?;
    let DistInfo {
        name,
        version,
        license,
        ..
    } = dist_info;
    Ok(InstalledWheel {
        name,
        version,
        files,
        license,
    })
}

/// What the dist-info directory says, read before anything is written.
#[derive(Debug)]
struct DistInfo {
    name: String,
    version: String,
    license: Option<String>,
    record: HashMap<String, Listed>,
    entry_points: Vec<EntryPoint>,
}

/// One archive entry checked against RECORD and given its place under `root`.
#[derive(Debug)]
struct Step<'e> {
    name: &'e str,
    entry: &'e Entry,
    listed: &'e Listed,
    dest: PathBuf,
    script: bool,
}

/// A file entry of the archive, found by name in a sorted map so installs go in a fixed order.
#[derive(Debug)]
struct Entry {
    index: usize,
    executable: bool,
}

/// How RECORD vouches for one file: `sha256=<urlsafe base64>` and size, each optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// `sha256=<urlsafe base64>`, as RECORD spells it.
    pub hash: Option<String>,
    /// The size in bytes.
    pub size: Option<u64>,
}

/// The RECORD form of a digest, so one comparison of strings checks a file.
fn record_hash(hasher: Sha256) -> String {
    format!("sha256={}", URL_SAFE_NO_PAD.encode(hasher.finalize()))
}

/// One install in progress: layout paths made relative to `root`, and what has been written.
struct Job<'a> {
    wheel: &'a Path,
    root: &'a Path,
    interpreter: &'a Path,
    site: PathBuf,
    scripts: PathBuf,
    data: PathBuf,
    headers: PathBuf,
    /// Files written so far (relative to `root`) with their RECORD hash and size.
    written: BTreeMap<PathBuf, (String, u64)>,
    /// Directories known to be real directories, not symlinks that could lead out of `root`.
    safe_dirs: HashSet<PathBuf>,
}

impl<'a> Job<'a> {
    fn new(wheel: &'a Path, layout: &'a PythonLayout, root: &'a Path) -> Result<Self, WheelError> {
        let inside = |path: &Path| {
            in_root(path).ok_or_else(|| WheelError::Invalid {
                wheel: wheel.to_owned(),
                reason: format!("layout path {} is not plain and absolute", path.display()),
            })
        };
        Ok(Job {
            wheel,
            root,
            interpreter: &layout.interpreter,
            site: inside(&layout.site_packages)?,
            scripts: inside(&layout.scripts)?,
            data: inside(&layout.data)?,
            headers: inside(&layout.headers)?,
            written: BTreeMap::new(),
            safe_dirs: HashSet::new(),
        })
    }

    fn zip(&self, source: ZipError) -> WheelError {
        let wheel = self.wheel.to_owned();
        WheelError::Zip { wheel, source }
    }

    fn invalid(&self, reason: String) -> WheelError {
        let wheel = self.wheel.to_owned();
        WheelError::Invalid { wheel, reason }
    }

    fn record(&self, entry: &str, reason: String) -> WheelError {
        let (wheel, entry) = (self.wheel.to_owned(), entry.to_owned());
        WheelError::Record {
            wheel,
            entry,
            reason,
        }
    }

    fn read_error(&self, entry: &str, source: io::Error) -> WheelError {
        let (wheel, entry) = (self.wheel.to_owned(), entry.to_owned());
        WheelError::Read {
            wheel,
            entry,
            source,
        }
    }

    fn write_error(&self, path: &Path, source: io::Error) -> WheelError {
        let (wheel, path) = (self.wheel.to_owned(), path.to_owned());
        WheelError::Write {
            wheel,
            path,
            source,
        }
    }

    /// The archive's files by name, after refusing names and kinds that could escape `root`.
    fn list_entries(
        &self,
        archive: &mut ZipArchive<File>,
    ) -> Result<BTreeMap<String, Entry>, WheelError> {
        let mut entries = BTreeMap::new();
        for index in 0..archive.len() {
            let file = archive.by_index_raw(index).map_err(|err| self.zip(err))?;
            let name = file.name().map_err(|err| self.zip(err))?.into_owned();
            let refuse = |reason| {
                let (wheel, entry) = (self.wheel.to_owned(), name.clone());
                Err(WheelError::Unsafe {
                    wheel,
                    entry,
                    reason,
                })
            };
            if let Err(reason) = check_entry_name(&name) {
                return refuse(reason);
            }
            if file.is_symlink() {
                return refuse("wheels have no symlinks");
            }
            if file.is_dir() {
                continue;
            }
            let executable = file.unix_mode().is_some_and(|mode| mode & 0o111 != 0);
            if entries.contains_key(&name) {
                return refuse("it appears twice");
            }
            entries.insert(name, Entry { index, executable });
        }
        Ok(entries)
    }

    /// `{name}-{version}` of the one top-level `.dist-info` directory.
    fn dist_info_stem(&self, entries: &BTreeMap<String, Entry>) -> Result<String, WheelError> {
        let stems: BTreeSet<&str> = entries
            .keys()
            .filter_map(|name| name.split_once('/')?.0.strip_suffix(".dist-info"))
            .collect();
        match stems.into_iter().collect::<Vec<_>>()[..] {
            [stem] => Ok(stem.to_owned()),
            ref stems => Err(self.invalid(format!("{} .dist-info directories", stems.len()))),
        }
    }

    /// A small dist-info file as text, or `None` if the wheel lacks it.
    fn read_text(
        &self,
        archive: &mut ZipArchive<File>,
        entries: &BTreeMap<String, Entry>,
        name: &str,
    ) -> Result<Option<String>, WheelError> {
        let Some(entry) = entries.get(name) else {
            return Ok(None);
        };
        let mut file = archive.by_index(entry.index).map_err(|err| self.zip(err))?;
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|err| self.read_error(name, err))?;
        Ok(Some(text))
    }

    /// WHEEL, METADATA, RECORD and entry points, refusing what cannot be installed faithfully.
    fn read_dist_info(
        &self,
        archive: &mut ZipArchive<File>,
        entries: &BTreeMap<String, Entry>,
        stem: &str,
    ) -> Result<DistInfo, WheelError> {
        let mut read = |file| self.read_text(archive, entries, &format!("{stem}.dist-info/{file}"));
        let missing = |file| self.invalid(format!("{stem}.dist-info/{file} is missing"));
        let wheel_file = read("WHEEL")?.ok_or_else(|| missing("WHEEL"))?;
        check_wheel_version(&wheel_file).map_err(|reason| self.invalid(reason))?;
        let metadata = read("METADATA")?.ok_or_else(|| missing("METADATA"))?;
        let name = header(&metadata, "Name").filter(|name| is_dist_name(name));
        let name = name.ok_or_else(|| self.invalid("METADATA has no valid Name".into()))?;
        let version = header(&metadata, "Version");
        let version = version.ok_or_else(|| self.invalid("METADATA has no Version".into()))?;
        let record = read("RECORD")?.ok_or_else(|| missing("RECORD"))?;
        let record = parse_record(&record).map_err(|reason| self.invalid(reason))?;
        let entry_points = read("entry_points.txt")?.unwrap_or_default();
        let entry_points = parse_entry_points(&entry_points).map_err(|line| {
            let wheel = self.wheel.to_owned();
            WheelError::EntryPoint { wheel, line }
        })?;
        let license = ["License-Expression", "License"]
            .into_iter()
            .find_map(|key| header(&metadata, key).filter(|value| !value.is_empty()))
            .map(str::to_owned);
        Ok(DistInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            license,
            record,
            entry_points,
        })
    }

    /// Every entry to install, each listed in RECORD and with a known destination.
    fn plan<'e>(
        &self,
        entries: &'e BTreeMap<String, Entry>,
        stem: &str,
        dist_info: &'e DistInfo,
    ) -> Result<Vec<Step<'e>>, WheelError> {
        // RECORD is rewritten, which would void its signatures.
        let skipped =
            ["RECORD", "RECORD.jws", "RECORD.p7s"].map(|f| format!("{stem}.dist-info/{f}"));
        let data_dir = format!("{stem}.data");
        let steps = entries.iter().filter(|(name, _)| !skipped.contains(name));
        steps
            .map(|(name, entry)| {
                let listed = dist_info.record.get(name.as_str());
                let listed =
                    listed.ok_or_else(|| self.record(name, "not listed in RECORD".into()))?;
                let (dest, script) = self.destination(name, &data_dir, &dist_info.name)?;
                Ok(Step {
                    name,
                    entry,
                    listed,
                    dest,
                    script,
                })
            })
            .collect()
    }

    /// Where an entry goes (relative to `root`), and whether it is a script from `.data`.
    fn destination(
        &self,
        name: &str,
        data_dir: &str,
        dist: &str,
    ) -> Result<(PathBuf, bool), WheelError> {
        let Some(inside) = name
            .strip_prefix(data_dir)
            .and_then(|n| n.strip_prefix('/'))
        else {
            return Ok((self.site.join(name), false));
        };
        let (kind, rest) = inside.split_once('/').unwrap_or((inside, ""));
        let base = match kind {
            "purelib" | "platlib" => self.site.clone(),
            "scripts" => self.scripts.clone(),
            "headers" => self.headers.join(dist),
            "data" => self.data.clone(),
            _ => return Err(self.invalid(format!("{name}: unknown .data directory {kind:?}"))),
        };
        if rest.is_empty() {
            return Err(self.invalid(format!("{name}: a file where a directory belongs")));
        }
        Ok((base.join(rest), kind == "scripts"))
    }

    /// Copies one entry to its place, checking it against RECORD; big files are streamed.
    fn install_entry(
        &mut self,
        archive: &mut ZipArchive<File>,
        step: &Step,
    ) -> Result<(), WheelError> {
        let mut file = archive
            .by_index(step.entry.index)
            .map_err(|err| self.zip(err))?;
        if step.script {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|err| self.read_error(step.name, err))?;
            let hash = record_hash(Sha256::new_with_prefix(&bytes));
            self.verify(step, hash, bytes.len() as u64)?;
            let bytes = rewrite_shebang(bytes, self.interpreter);
            return self.write_generated(&step.dest, &bytes, true);
        }
        let mut out = self.create(&step.dest, step.entry.executable)?;
        let (mut hasher, mut buffer, mut size) = (Sha256::new(), vec![0; 1 << 16], 0);
        loop {
            let n = file
                .read(&mut buffer)
                .map_err(|err| self.read_error(step.name, err))?;
            let chunk = buffer.get(..n).unwrap_or_default();
            if chunk.is_empty() {
                break;
            }
            hasher.update(chunk);
            out.write_all(chunk)
                .map_err(|err| self.write_error(&step.dest, err))?;
            size += n as u64;
        }
        let hash = record_hash(hasher);
        if let Err(err) = self.verify(step, hash.clone(), size) {
            // Best effort: the caller discards `root` after an error anyway.
            let _ = fs::remove_file(self.root.join(&step.dest));
            return Err(err);
        }
        self.written.insert(step.dest.clone(), (hash, size));
        Ok(())
    }

    /// Refuses contents that RECORD does not vouch for.
    fn verify(&self, step: &Step, hash: String, size: u64) -> Result<(), WheelError> {
        let (name, listed) = (step.name, step.listed);
        if let Some(expected) = &listed.hash
            && expected.trim_end_matches('=') != hash
        {
            return Err(self.record(name, format!("RECORD says {expected}, content has {hash}")));
        }
        match listed.size {
            Some(expected) if expected != size => Err(self.record(
                name,
                format!("RECORD says {expected} bytes, content has {size}"),
            )),
            _ => Ok(()),
        }
    }

    /// Writes a file kiln made (launcher, INSTALLER, rewritten script) and remembers its hash.
    fn write_generated(
        &mut self,
        dest: &Path,
        bytes: &[u8],
        executable: bool,
    ) -> Result<(), WheelError> {
        let mut out = self.create(dest, executable)?;
        out.write_all(bytes)
            .map_err(|err| self.write_error(dest, err))?;
        let hash = record_hash(Sha256::new_with_prefix(bytes));
        self.written
            .insert(dest.to_owned(), (hash, bytes.len() as u64));
        Ok(())
    }

    /// Writes RECORD with paths relative to site-packages, as Python tools expect; returns all
    /// files written.
    fn write_record(mut self, record: &Path) -> Result<Vec<PathBuf>, WheelError> {
        // A `.data/purelib` copy of RECORD must not make it list itself twice.
        self.written.remove(record);
        let mut lines: Vec<String> = self
            .written
            .iter()
            .map(|(path, (hash, size))| {
                let listed = Listed {
                    hash: Some(hash.clone()),
                    size: Some(*size),
                };
                record_line(&from_site(&self.site, path), &listed)
            })
            .collect();
        let unlisted = Listed {
            hash: None,
            size: None,
        };
        lines.push(record_line(&from_site(&self.site, record), &unlisted));
        lines.sort();
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        let mut out = self.create(record, false)?;
        out.write_all(text.as_bytes())
            .map_err(|err| self.write_error(record, err))?;
        let mut files: Vec<PathBuf> = self.written.into_keys().collect();
        files.push(record.to_owned());
        files.sort();
        Ok(files)
    }

    /// A new file at `dest` (relative to `root`), replacing any file but never following a symlink.
    fn create(&mut self, dest: &Path, executable: bool) -> Result<File, WheelError> {
        if let Some(parent) = dest.parent() {
            self.make_dirs(parent)?;
        }
        let path = self.root.join(dest);
        let error = |err| self.write_error(dest, err);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => return Err(error(io::ErrorKind::IsADirectory.into())),
            Ok(_) => fs::remove_file(&path).map_err(error)?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(error(err)),
        }
        let mode = if executable { 0o755 } else { 0o644 };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path);
        let file = file.map_err(error)?;
        // The umask must not decide what goes into the image.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(error)?;
        Ok(file)
    }

    /// Creates `dir` under `root` (mode 0755), refusing symlinks on the way so nothing leaves `root`.
    fn make_dirs(&mut self, dir: &Path) -> Result<(), WheelError> {
        let mut current = PathBuf::new();
        for component in dir.components() {
            current.push(component);
            if self.safe_dirs.contains(&current) {
                continue;
            }
            let path = self.root.join(&current);
            let error = |err| self.write_error(&current, err);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(error(io::Error::other(
                        "not a directory (symlinks are not followed)",
                    )));
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).map_err(error)?;
                    fs::set_permissions(&path, Permissions::from_mode(0o755)).map_err(error)?;
                }
                Err(err) => return Err(error(err)),
            }
            self.safe_dirs.insert(current.clone());
        }
        Ok(())
    }
}

/// An absolute image path as a path relative to `root`, if it has no `..` or `.` in it.
fn in_root(path: &Path) -> Option<PathBuf> {
    let mut components = path.components();
    (components.next() == Some(Component::RootDir)).then_some(())?;
    components
        .map(|c| match c {
            Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect()
}

/// Why an entry name could land outside its destination, if it could.
fn check_entry_name(name: &str) -> Result<(), &'static str> {
    if name.starts_with('/') {
        return Err("absolute path");
    }
    if name.contains('\\') || name.chars().any(char::is_control) {
        return Err("backslash or control character in the name");
    }
    let path = name.strip_suffix('/').unwrap_or(name);
    if path.split('/').any(|part| matches!(part, "" | "." | "..")) {
        return Err("empty, `.` or `..` path segment");
    }
    Ok(())
}

/// The value of an email-style header (WHEEL, METADATA), from the header block only.
fn header<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    text.lines()
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| !line.starts_with([' ', '\t']))
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case(key).then(|| value.trim())
        })
}

/// Refuses wheels of a future major format version, whose layout we cannot know.
fn check_wheel_version(wheel_file: &str) -> Result<(), String> {
    let version = header(wheel_file, "Wheel-Version").ok_or("WHEEL has no Wheel-Version")?;
    match version.split('.').next() {
        Some("1") => Ok(()),
        _ => Err(format!("unsupported Wheel-Version {version}")),
    }
}

/// A PEP 508 name; it becomes a directory under `headers`, so it must be a plain file name.
fn is_dist_name(name: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_alphanumeric();
    is_script_name(name) && name.starts_with(alphanumeric) && name.ends_with(alphanumeric)
}

/// A name safe to use as a file in `scripts`.
fn is_script_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A Python dotted name; entry points become `import` lines, so nothing else may pass.
fn is_dotted_identifier(name: &str) -> bool {
    name.split('.').all(|part| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
            && chars.all(|c| c == '_' || c.is_alphanumeric())
    })
}

/// RECORD lines by path; RECORD is CSV, so paths with commas come quoted. A path listed twice
/// keeps its last line. Public so the fuzz targets can reach it.
pub fn parse_record(text: &str) -> Result<HashMap<String, Listed>, String> {
    let mut record = HashMap::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let bad = || format!("bad RECORD line {line:?}");
        let [path, hash, size] =
            <[String; 3]>::try_from(split_csv(line).ok_or_else(bad)?).map_err(|_| bad())?;
        if !(hash.is_empty() || hash.starts_with("sha256=")) {
            return Err(format!("unsupported hash in RECORD line {line:?}"));
        }
        let size = (!size.is_empty())
            .then(|| size.parse())
            .transpose()
            .map_err(|_| bad())?;
        let hash = (!hash.is_empty()).then_some(hash);
        record.insert(path, Listed { hash, size });
    }
    Ok(record)
}

/// The fields of one CSV line, or `None` if a quote is left open.
fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let (mut quoted, mut chars) = (false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut()?.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            _ => fields.last_mut()?.push(c),
        }
    }
    (!quoted).then_some(fields)
}

/// One RECORD line, without its newline: what [`parse_record`] reads back as `listed`.
pub fn record_line(path: &str, listed: &Listed) -> String {
    let hash = listed.hash.as_deref().map(csv).unwrap_or_default();
    let size = listed.size.map(|size| size.to_string()).unwrap_or_default();
    format!("{},{hash},{size}", csv(path))
}

/// A CSV field, quoted only when it has to be.
fn csv(field: &str) -> String {
    if field.contains([',', '"']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// `path` (relative to `root`) as seen from site-packages, with `..` for what lies outside.
fn from_site(site: &Path, path: &Path) -> String {
    let site: Vec<_> = site.components().collect();
    let path: Vec<_> = path.components().collect();
    let common = site.iter().zip(&path).take_while(|(a, b)| a == b).count();
    let ups = std::iter::repeat_n("..".to_owned(), site.len() - common);
    let downs = path
        .iter()
        .skip(common)
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    ups.chain(downs).collect::<Vec<_>>().join("/")
}

/// A console or GUI script: `script = module:object`.
#[derive(Debug)]
struct EntryPoint {
    script: String,
    module: String,
    object: String,
}

/// Console and GUI scripts of `entry_points.txt`; an invalid line is returned as the error.
fn parse_entry_points(text: &str) -> Result<Vec<EntryPoint>, String> {
    let (mut in_scripts, mut entry_points) = (false, Vec::new());
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_scripts = matches!(section.trim(), "console_scripts" | "gui_scripts");
            continue;
        }
        if !in_scripts {
            continue;
        }
        let entry_point = line.split_once('=').and_then(|(script, target)| {
            let target = target.split('[').next()?;
            let (module, object) = target.split_once(':')?;
            let (script, module, object) = (script.trim(), module.trim(), object.trim());
            let valid = is_script_name(script)
                && is_dotted_identifier(module)
                && is_dotted_identifier(object);
            valid.then(|| EntryPoint {
                script: script.to_owned(),
                module: module.to_owned(),
                object: object.to_owned(),
            })
        });
        entry_points.push(entry_point.ok_or_else(|| line.to_owned())?);
    }
    Ok(entry_points)
}

/// The launcher pip would write, minus what only matters on Windows.
fn launcher(interpreter: &Path, entry_point: &EntryPoint) -> String {
    let EntryPoint { module, object, .. } = entry_point;
    let top = object
        .split_once('.')
        .map_or(object.as_str(), |(top, _)| top);
    format!(
        "#!{}\nimport sys\nfrom {module} import {top}\n\nif __name__ == \"__main__\":\n    sys.exit({object}())\n",
        interpreter.display()
    )
}

/// Points a `#!python` (or `#!pythonw`, `#!python3`…) script at the image's interpreter,
/// keeping its arguments.
fn rewrite_shebang(script: Vec<u8>, interpreter: &Path) -> Vec<u8> {
    let Some(after) = script.strip_prefix(b"#!python") else {
        return script;
    };
    let end = after
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(after.len());
    let first = after.get(..end).unwrap_or_default();
    let args = first
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(first.len());
    let mut out = format!("#!{}", interpreter.display()).into_bytes();
    out.extend_from_slice(first.get(args..).unwrap_or_default().trim_ascii_end());
    out.push(b'\n');
    out.extend_from_slice(after.get(end + 1..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    const WHEEL: &str = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n";
    const METADATA: &str = "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n\nLong text.\n";
    const SITE: &str = "usr/local/lib/python3.11/dist-packages";

    fn layout() -> PythonLayout {
        PythonLayout {
            interpreter: "/usr/bin/python3".into(),
            site_packages: format!("/{SITE}").into(),
            scripts: "/usr/local/bin".into(),
            data: "/usr/local".into(),
            headers: "/usr/local/include/python3.11".into(),
        }
    }

    fn sha256(bytes: &[u8]) -> String {
        record_hash(Sha256::new_with_prefix(bytes))
    }

    /// WHEEL and METADATA, then `extra`, as (name, contents, unix mode).
    fn files<'a>(extra: &[(&'a str, &'a str, u32)]) -> Vec<(&'a str, &'a str, u32)> {
        let mut files = vec![
            ("demo-1.0.dist-info/WHEEL", WHEEL, 0o644),
            ("demo-1.0.dist-info/METADATA", METADATA, 0o644),
        ];
        files.extend_from_slice(extra);
        files
    }

    /// A RECORD that vouches for `files` as they are.
    fn record_of(files: &[(&str, &str, u32)]) -> String {
        let lines = files
            .iter()
            .map(|(name, text, _)| format!("{name},{},{}\n", sha256(text.as_bytes()), text.len()));
        lines
            .chain(["demo-1.0.dist-info/RECORD,,\n".into()])
            .collect()
    }

    fn wheel_with_record(dir: &Path, files: &[(&str, &str, u32)], record: &str) -> PathBuf {
        let path = dir.join("demo-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let record = [("demo-1.0.dist-info/RECORD", record, 0o644)];
        for (name, text, mode) in files.iter().chain(&record) {
            let options = SimpleFileOptions::default().unix_permissions(*mode);
            zip.start_file(*name, options).unwrap();
            zip.write_all(text.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
        path
    }

    /// A well-formed wheel with `extra` files besides WHEEL and METADATA.
    fn wheel(dir: &Path, extra: &[(&str, &str, u32)]) -> PathBuf {
        let files = files(extra);
        wheel_with_record(dir, &files, &record_of(&files))
    }

    fn install(wheel: &Path, root: &Path) -> Result<InstalledWheel, WheelError> {
        install_wheel(wheel, &layout(), root)
    }

    fn read(root: &Path, path: &str) -> String {
        fs::read_to_string(root.join(path)).unwrap()
    }

    fn mode(root: &Path, path: &str) -> u32 {
        fs::metadata(root.join(path)).unwrap().permissions().mode() & 0o7777
    }

    /// Every path under `dir` with its mode and contents, sorted.
    fn tree(base: &Path, dir: &Path, out: &mut Vec<(PathBuf, u32, Vec<u8>)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let contents = if meta.is_dir() {
                Vec::new()
            } else {
                fs::read(&path).unwrap()
            };
            let relative = path.strip_prefix(base).unwrap().to_owned();
            out.push((relative, meta.permissions().mode(), contents));
            if meta.is_dir() {
                tree(base, &path, out);
            }
        }
        out.sort();
    }

    #[test]
    fn the_license_comes_from_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let plain = wheel(dir.path(), &[]);
        assert_eq!(install(&plain, dir.path()).unwrap().license, None);
        for (headers, expected) in [
            ("License: MIT License\n", "MIT License"),
            (
                "License: MIT License\nLicense-Expression: MIT OR Apache-2.0\n",
                "MIT OR Apache-2.0",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let metadata =
                format!("Metadata-Version: 2.4\nName: demo\nVersion: 1.0\n{headers}\nText.\n");
            let files = [
                ("demo-1.0.dist-info/WHEEL", WHEEL, 0o644),
                ("demo-1.0.dist-info/METADATA", metadata.as_str(), 0o644),
            ];
            let wheel = wheel_with_record(dir.path(), &files, &record_of(&files));
            let installed = install(&wheel, dir.path()).unwrap();
            assert_eq!(installed.license.as_deref(), Some(expected), "{headers}");
        }
    }

    #[test]
    fn installs_package_dist_info_and_entry_points() {
        let dir = tempfile::tempdir().unwrap();
        let entry_points = "[console_scripts]\ndemo = demo.cli:main [fast]\n\n[gui_scripts]\n\
                            ; comment\ndemo-gui = demo.cli:App.run\n[other]\nx = not valid!\n";
        let wheel = wheel(
            dir.path(),
            &[
                ("demo/__init__.py", "", 0o644),
                ("demo/cli.py", "def main(): pass\n", 0o644),
                ("demo-1.0.dist-info/entry_points.txt", entry_points, 0o644),
            ],
        );
        let installed = install(&wheel, dir.path()).unwrap();

        assert_eq!((&*installed.name, &*installed.version), ("demo", "1.0"));
        let site = ["__init__.py", "cli.py"].map(|f| format!("{SITE}/demo/{f}"));
        let dist_info = [
            "INSTALLER",
            "METADATA",
            "RECORD",
            "WHEEL",
            "entry_points.txt",
        ]
        .map(|f| format!("{SITE}/demo-1.0.dist-info/{f}"));
        let scripts = ["demo", "demo-gui"].map(|f| format!("usr/local/bin/{f}"));
        let expected: Vec<PathBuf> = scripts
            .iter()
            .chain(&site)
            .chain(&dist_info)
            .map(PathBuf::from)
            .collect();
        assert_eq!(installed.files, expected);

        let script = read(dir.path(), "usr/local/bin/demo");
        assert!(script.starts_with("#!/usr/bin/python3\n"), "{script}");
        assert!(
            script.contains("from demo.cli import main\n") && script.contains("sys.exit(main())")
        );
        let gui = read(dir.path(), "usr/local/bin/demo-gui");
        assert!(gui.contains("from demo.cli import App\n") && gui.contains("sys.exit(App.run())"));
        assert_eq!(mode(dir.path(), "usr/local/bin/demo"), 0o755);
        assert_eq!(mode(dir.path(), &site[1]), 0o644);
        assert_eq!(read(dir.path(), &dist_info[0]), "kiln\n");

        let record = read(dir.path(), &dist_info[2]);
        let lines: Vec<&str> = record.lines().collect();
        assert!(lines.is_sorted() && lines.len() == 9, "{record}");
        for line in [
            "demo-1.0.dist-info/RECORD,,".to_owned(),
            format!("demo/cli.py,{},17", sha256(b"def main(): pass\n")),
            format!(
                "../../../bin/demo,{},{}",
                sha256(script.as_bytes()),
                script.len()
            ),
            format!("demo-1.0.dist-info/INSTALLER,{},5", sha256(b"kiln\n")),
        ] {
            assert!(lines.contains(&line.as_str()), "{line} not in {record}");
        }
    }

    #[test]
    fn data_scripts_get_the_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = wheel(
            dir.path(),
            &[
                (
                    "demo-1.0.data/scripts/tool",
                    "#!python -u\nprint('hi')\n",
                    0o644,
                ),
                (
                    "demo-1.0.data/scripts/gui",
                    "#!pythonw\r\nprint('hi')\n",
                    0o644,
                ),
                (
                    "demo-1.0.data/scripts/plain.sh",
                    "#!/bin/sh\necho hi\n",
                    0o644,
                ),
            ],
        );
        install(&wheel, dir.path()).unwrap();
        let bin = dir.path().join("usr/local/bin");
        assert_eq!(read(&bin, "tool"), "#!/usr/bin/python3 -u\nprint('hi')\n");
        assert_eq!(read(&bin, "gui"), "#!/usr/bin/python3\nprint('hi')\n");
        assert_eq!(read(&bin, "plain.sh"), "#!/bin/sh\necho hi\n");
        for script in ["tool", "gui", "plain.sh"] {
            assert_eq!(mode(&bin, script), 0o755);
        }
    }

    #[test]
    fn data_headers_and_platlib_go_to_their_places() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = wheel(
            dir.path(),
            &[
                ("demo-1.0.data/data/share/demo/x.txt", "x", 0o644),
                ("demo-1.0.data/headers/demo.h", "int x;", 0o644),
                ("demo-1.0.data/platlib/_demo.so", "ELF", 0o755),
            ],
        );
        let installed = install(&wheel, dir.path()).unwrap();
        assert_eq!(read(dir.path(), "usr/local/share/demo/x.txt"), "x");
        assert_eq!(
            read(dir.path(), "usr/local/include/python3.11/demo/demo.h"),
            "int x;"
        );
        assert_eq!(mode(dir.path(), &format!("{SITE}/_demo.so")), 0o755);
        assert!(
            installed
                .files
                .contains(&"usr/local/share/demo/x.txt".into())
        );
        let record = read(dir.path(), &format!("{SITE}/demo-1.0.dist-info/RECORD"));
        assert!(
            record.starts_with("../../../include/python3.11/demo/demo.h,"),
            "{record}"
        );
        assert!(record.contains("\n../../../share/demo/x.txt,"), "{record}");
    }

    #[test]
    fn unknown_data_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = wheel(dir.path(), &[("demo-1.0.data/etc/passwd", "x", 0o644)]);
        let err = install(&wheel, dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("unknown .data directory \"etc\""),
            "{err}"
        );
    }

    #[test]
    fn hash_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(&[("demo/__init__.py", "print('tampered')\n", 0o644)]);
        let record = record_of(&files).replace(&sha256(b"print('tampered')\n"), &sha256(b""));
        let wheel = wheel_with_record(dir.path(), &files, &record);
        let err = install(&wheel, dir.path()).unwrap_err();
        assert!(matches!(&err, WheelError::Record { entry, .. } if entry == "demo/__init__.py"));
        assert!(!dir.path().join(SITE).join("demo/__init__.py").exists());
    }

    #[test]
    fn file_missing_from_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let all = files(&[("demo/sneaky.py", "x", 0o644)]);
        let wheel = wheel_with_record(dir.path(), &all, &record_of(&files(&[])));
        let err = install(&wheel, dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("demo/sneaky.py: not listed in RECORD"),
            "{err}"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only the wheel"
        );
    }

    #[test]
    fn entries_leaving_root_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        for name in [
            "../evil.py",
            "demo/../../evil.py",
            "/tmp/evil.py",
            "demo\\..\\evil.py",
        ] {
            let wheel = wheel(dir.path(), &[("demo/ok.py", "", 0o644), (name, "x", 0o644)]);
            let err = install(&wheel, &root).unwrap_err();
            assert!(matches!(err, WheelError::Unsafe { .. }), "{name}: {err}");
            assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "{name}");
            assert!(!dir.path().join("evil.py").exists());
        }
    }

    #[test]
    fn symlink_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        zip.add_symlink("demo/link", "/etc/passwd", SimpleFileOptions::default())
            .unwrap();
        zip.finish().unwrap();
        let err = install(&path, dir.path()).unwrap_err();
        assert!(matches!(err, WheelError::Unsafe { .. }), "{err}");
    }

    #[test]
    fn bad_entry_points_are_refused() {
        for line in [
            "evil = os:system('id')",
            "../x = demo:main",
            ".hidden = a:b",
            "x = demo",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let text = format!("[console_scripts]\n{line}\n");
            let wheel = wheel(
                dir.path(),
                &[("demo-1.0.dist-info/entry_points.txt", &text, 0o644)],
            );
            let err = install(&wheel, dir.path()).unwrap_err();
            assert!(
                matches!(&err, WheelError::EntryPoint { line: l, .. } if l == line),
                "{err}"
            );
        }
    }

    #[test]
    fn future_wheel_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = files(&[]);
        files[0].1 = "Wheel-Version: 2.0\n";
        let wheel = wheel_with_record(dir.path(), &files, &record_of(&files));
        let err = install(&wheel, dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("unsupported Wheel-Version 2.0"),
            "{err}"
        );
    }

    #[test]
    fn installs_are_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = wheel(
            dir.path(),
            &[
                ("demo/__init__.py", "x = 1\n", 0o644),
                ("demo/tool.sh", "#!/bin/sh\n", 0o755),
                ("demo-1.0.data/scripts/run", "#!python\n", 0o644),
                (
                    "demo-1.0.dist-info/entry_points.txt",
                    "[console_scripts]\nd = demo:x\n",
                    0o644,
                ),
            ],
        );
        let trees: Vec<_> = ["a", "b"]
            .map(|name| {
                let root = dir.path().join(name);
                fs::create_dir(&root).unwrap();
                install(&wheel, &root).unwrap();
                let mut out = Vec::new();
                tree(&root, &root, &mut out);
                out
            })
            .into();
        assert!(trees[0].len() > 10);
        assert_eq!(trees[0], trees[1]);
    }

    #[test]
    fn record_fields_round_trip_through_csv() {
        assert_eq!(split_csv("\"a,\"\"b\",,1").unwrap(), ["a,\"b", "", "1"]);
        assert_eq!(csv("a,\"b"), "\"a,\"\"b\"");
        assert_eq!(split_csv("\"open"), None);
    }

    #[test]
    fn record_lines_read_back_as_written() {
        let listed = |hash: Option<&str>, size: Option<u64>| Listed {
            hash: hash.map(Into::into),
            size,
        };
        let lines = [
            ("demo/a,b.py", listed(Some("sha256=abc"), Some(3))),
            ("demo/say \"hi\".txt", listed(None, Some(0))),
            ("demo-1.0.dist-info/RECORD", listed(None, None)),
        ];
        let text: String = lines
            .iter()
            .map(|(path, listed)| record_line(path, listed) + "\r\n")
            .collect();
        let expected = lines.map(|(path, listed)| (path.to_owned(), listed));
        assert_eq!(parse_record(&text), Ok(HashMap::from(expected)));
        assert_eq!(
            record_line("demo-1.0.dist-info/RECORD", &listed(None, None)),
            "demo-1.0.dist-info/RECORD,,"
        );
    }
}
