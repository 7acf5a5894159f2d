//! A real conda channel, `kiln-test`, built on disk from conda package archives and served over
//! HTTP on 127.0.0.1, for tests that solve and install conda packages without network access.
//!
//! The channel has the subdirs `linux-64`, `linux-aarch64` and `noarch`, each with a
//! `repodata.json`. Packages (`linux-64` and `linux-aarch64` unless noted):
//!
//! | package | what it holds |
//! | --- | --- |
//! | `kiln-libgreet` 1.0 `h0_0` | `lib/kiln-greet.sh` (a sh library defining `greet`) and `share/kiln-libgreet/prefix.txt`, which contains the prefix placeholder |
//! | `kiln-hello` 1.0 `h0_0` (`.tar.bz2`) and 2.0 `h0_0` (`.conda`) | `bin/kiln-hello`, a sh script that sources the library through the prefix placeholder, so it only runs when the installer patched the prefix; depends on `kiln-libgreet >=1.0` |
//! | `python` 3.12.0 `h0_0` | a stand-in interpreter: `bin/python3.12` is a sh script (prefix-patched) that runs `/usr/bin/python3` with the prefix's `lib/python3.12/site-packages` on `PYTHONPATH`, `bin/python3` and `bin/python` are symlinks to it, and `lib/python3.12/site-packages/.keep` |
//! | `kiln-pyhello` 1.0 `pyh0_0` (`noarch`) | `noarch: python`, depends on `python >=3.8`; `site-packages/kiln_pyhello/__init__.py` and the entry point `kiln-pyhello = kiln_pyhello:main` |
//! | `kiln-postlink` 1.0 `h0_0` | `bin/.kiln-postlink-post-link.sh`, a post-link script |
//! | `six` 1.16.0 `pyh0_0` (`noarch`) | `noarch: python`; `site-packages/six.py` (with `INSTALLED_BY = "conda"`) and its `six-1.16.0.dist-info`, so pip sees six 1.16.0 as installed |
//!
//! Archives are reproducible: every tar entry has the same fixed mtime, and every record the
//! same fixed timestamp.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rattler_conda_types::compression_level::CompressionLevel;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

/// The channel's name, also the first segment of every path its server answers.
pub const CHANNEL_NAME: &str = "kiln-test";

/// The subdirs the channel has, each with a `repodata.json`.
pub const SUBDIRS: [&str; 3] = ["linux-64", "linux-aarch64", "noarch"];

/// The prefix placeholder that patched files carry, which installers replace with the prefix.
pub const PREFIX_PLACEHOLDER: &str = "/opt/anaconda1anaconda2anaconda3";

/// The build timestamp of every package, in milliseconds since the epoch (2023-01-01).
const TIMESTAMP_MS: u64 = 1_672_531_200_000;

/// The platform subdirs that get every architecture-specific package.
const PLATFORMS: [(&str, &str); 2] = [("linux-64", "x86_64"), ("linux-aarch64", "aarch64")];

/// A `kiln-test` conda channel built in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct CondaChannel {
    /// The channel directory (named `kiln-test`), holding one directory per subdir.
    pub dir: PathBuf,
    _temp: TempDir,
}

impl CondaChannel {
    /// Builds every package archive and every subdir's `repodata.json`.
    pub fn build() -> CondaChannel {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join(CHANNEL_NAME);
        let mut repodata: BTreeMap<&str, Repodata> = BTreeMap::new();
        for subdir in SUBDIRS {
            fs::create_dir_all(dir.join(subdir)).expect("subdir");
            repodata.insert(subdir, Repodata::default());
        }
        for package in packages() {
            let archive = dir.join(package.subdir).join(package.file_name());
            write_package(&package, &archive);
            let record = package.record(&archive);
            let entries = repodata.get_mut(package.subdir).expect("known subdir");
            let map = match package.format {
                Format::TarBz2 => &mut entries.packages,
                Format::Conda => &mut entries.conda_packages,
            };
            map.insert(package.file_name(), record);
        }
        for (subdir, entries) in repodata {
            let json = json!({
                "info": { "subdir": subdir },
                "packages": entries.packages,
                "packages.conda": entries.conda_packages,
                "removed": [],
                "repodata_version": 1,
            });
            let text = serde_json::to_string_pretty(&json).expect("repodata serializes");
            fs::write(dir.join(subdir).join("repodata.json"), text).expect("write repodata");
        }
        CondaChannel { dir, _temp: temp }
    }

    /// Serves the channel over HTTP on a free 127.0.0.1 port, from a thread of its own, so it
    /// answers whatever the calling test does (blocking or async) until the server is dropped.
    pub fn serve(&self) -> ChannelServer {
        serve_dir(self.dir.clone())
    }
}

/// Serves the channel directory `root` (its name is the channel's) like [`CondaChannel::serve`].
pub fn serve_dir(root: PathBuf) -> ChannelServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let address = listener.local_addr().expect("local address");
    let name = root
        .file_name()
        .expect("the channel directory has a name")
        .to_string_lossy()
        .into_owned();
    let url = format!("http://{address}/{name}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let router = axum::Router::new().fallback(move |method: Method, uri: Uri| {
                let root = root.clone();
                let name = name.clone();
                async move { serve_file(&root, &name, &method, &uri).await }
            });
            tokio::select! {
                result = axum::serve(listener, router).into_future() => {
                    result.expect("channel server runs");
                }
                _ = stopped => {}
            }
        });
        // Dropping the runtime here ends any connection still open.
    });
    ChannelServer {
        url,
        stop: Some(stop),
        thread: Some(thread),
    }
}

impl CondaChannel {
    /// The sha256 (lowercase hex) of an archive as it is now on disk; `path` is relative to the
    /// channel directory, e.g. `linux-64/kiln-hello-1.0-h0_0.tar.bz2`.
    pub fn package_sha256(&self, path: &str) -> String {
        let bytes = fs::read(self.dir.join(path)).expect("read archive");
        hex::encode(Sha256::digest(&bytes))
    }

    /// Replaces an archive (`path` relative to the channel directory) with a still valid package
    /// whose `info/about.json` differs, so its sha256 (and likely its size) no longer match its
    /// `repodata.json` record while it still extracts: only a checksum check can catch it.
    pub fn corrupt(&self, path: &str) {
        let archive = self.dir.join(path);
        let before = self.package_sha256(path);
        let unpacked = tempfile::tempdir().expect("temp dir");
        rattler_package_streaming::fs::extract(&archive, unpacked.path()).expect("extract");
        let about = unpacked.path().join("info/about.json");
        let mut about_json: Value =
            serde_json::from_slice(&fs::read(&about).expect("read about.json")).expect("json");
        about_json["description"] = json!("tampered with after the repodata was written");
        fs::write(&about, serde_json::to_vec(&about_json).expect("json")).expect("write");
        let mut paths = Vec::new();
        list_files(unpacked.path(), Path::new(""), &mut paths);
        write_archive(&archive, unpacked.path(), &paths);
        assert_ne!(before, self.package_sha256(path), "{path} was not changed");
    }
}

/// The HTTP server of a [`CondaChannel`]; stops when dropped.
#[derive(Debug)]
pub struct ChannelServer {
    /// The channel URL, `http://127.0.0.1:PORT/kiln-test`; subdirs are below it.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ChannelServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers GET and HEAD for `/<name>/<subdir>/<file>` from the channel directory: 404 for a
/// missing file, 400 for a path that is not plain segments (`..`, `.`, empty, `%`, `\`).
pub async fn serve_file(root: &Path, name: &str, method: &Method, uri: &Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Some(rest) = uri.path().strip_prefix(&format!("/{name}/")) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut path = root.to_path_buf();
    for segment in rest.split('/') {
        let plain = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && !segment.contains(['%', '\\', '\0']);
        if !plain {
            return StatusCode::BAD_REQUEST.into_response();
        }
        path.push(segment);
    }
    match tokio::fs::metadata(&path).await {
        Ok(metadata) if metadata.is_file() => {}
        _ => return StatusCode::NOT_FOUND.into_response(),
    }
    let Ok(bytes) = tokio::fs::read(&path).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let content_type = if rest.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        bytes,
    )
        .into_response()
}

/// The records of one subdir, by file name.
#[derive(Default)]
struct Repodata {
    packages: BTreeMap<String, Value>,
    conda_packages: BTreeMap<String, Value>,
}

/// The archive format of a package.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    TarBz2,
    Conda,
}

/// One payload entry of a package.
enum Payload {
    /// A regular file; `placeholder` marks it as a text file carrying [`PREFIX_PLACEHOLDER`].
    File {
        path: &'static str,
        contents: String,
        executable: bool,
        placeholder: bool,
    },
    /// A symbolic link to `target`.
    Symlink {
        path: &'static str,
        target: &'static str,
    },
}

impl Payload {
    fn file(path: &'static str, contents: impl Into<String>) -> Payload {
        Payload::File {
            path,
            contents: contents.into(),
            executable: false,
            placeholder: false,
        }
    }

    fn path(&self) -> &'static str {
        match self {
            Payload::File { path, .. } | Payload::Symlink { path, .. } => path,
        }
    }
}

/// One package archive of the channel.
struct Package {
    name: &'static str,
    version: &'static str,
    build: &'static str,
    subdir: &'static str,
    /// `None` for `noarch` packages.
    arch: Option<&'static str>,
    depends: Vec<&'static str>,
    noarch_python: bool,
    entry_points: Vec<&'static str>,
    format: Format,
    payload: Vec<Payload>,
}

impl Package {
    fn file_name(&self) -> String {
        let extension = match self.format {
            Format::TarBz2 => "tar.bz2",
            Format::Conda => "conda",
        };
        format!("{}-{}-{}.{extension}", self.name, self.version, self.build)
    }

    /// The fields `info/index.json` and the `repodata.json` record share.
    fn index(&self) -> serde_json::Map<String, Value> {
        let mut index = serde_json::Map::new();
        index.insert("name".into(), json!(self.name));
        index.insert("version".into(), json!(self.version));
        index.insert("build".into(), json!(self.build));
        index.insert("build_number".into(), json!(0));
        index.insert("depends".into(), json!(self.depends));
        index.insert("license".into(), json!("Apache-2.0"));
        index.insert("subdir".into(), json!(self.subdir));
        index.insert("timestamp".into(), json!(TIMESTAMP_MS));
        match self.arch {
            Some(arch) => {
                index.insert("arch".into(), json!(arch));
                index.insert("platform".into(), json!("linux"));
            }
            None => {
                index.insert("arch".into(), Value::Null);
                index.insert("platform".into(), Value::Null);
            }
        }
        if self.noarch_python {
            index.insert("noarch".into(), json!("python"));
        }
        index
    }

    /// The `repodata.json` record of the archive written at `archive`: the index fields plus
    /// its size, sha256 and md5 (the md5 as rattler computes it while extracting).
    fn record(&self, archive: &Path) -> Value {
        let unpacked = tempfile::tempdir().expect("temp dir");
        let extracted =
            rattler_package_streaming::fs::extract(archive, unpacked.path()).expect("extract");
        let bytes = fs::read(archive).expect("read archive");
        let mut record = self.index();
        record.insert("size".into(), json!(bytes.len()));
        record.insert("sha256".into(), json!(hex::encode(Sha256::digest(&bytes))));
        record.insert("md5".into(), json!(hex::encode(extracted.md5)));
        Value::Object(record)
    }
}

/// Every package archive of the channel.
fn packages() -> Vec<Package> {
    let mut packages = Vec::new();
    for (subdir, arch) in PLATFORMS {
        let platform = |name, version, build, format, depends, payload| Package {
            name,
            version,
            build,
            subdir,
            arch: Some(arch),
            depends,
            noarch_python: false,
            entry_points: Vec::new(),
            format,
            payload,
        };
        packages.push(platform(
            "kiln-libgreet",
            "1.0",
            "h0_0",
            Format::TarBz2,
            Vec::new(),
            vec![
                Payload::file(
                    "lib/kiln-greet.sh",
                    "# kiln-libgreet: a POSIX sh library\ngreet() { echo \"hello from $1 on $(uname -m)\"; }\n",
                ),
                Payload::File {
                    path: "share/kiln-libgreet/prefix.txt",
                    contents: format!("installed in {PREFIX_PLACEHOLDER}\n"),
                    executable: false,
                    placeholder: true,
                },
            ],
        ));
        for (version, format) in [("1.0", Format::TarBz2), ("2.0", Format::Conda)] {
            packages.push(platform(
                "kiln-hello",
                version,
                "h0_0",
                format,
                vec!["kiln-libgreet >=1.0"],
                vec![Payload::File {
                    path: "bin/kiln-hello",
                    contents: format!(
                        "#!/bin/sh\n. {PREFIX_PLACEHOLDER}/lib/kiln-greet.sh\ngreet \"kiln-hello {version}\"\n"
                    ),
                    executable: true,
                    placeholder: true,
                }],
            ));
        }
        packages.push(platform(
            "python",
            "3.12.0",
            "h0_0",
            Format::TarBz2,
            Vec::new(),
            vec![
                Payload::File {
                    path: "bin/python3.12",
                    contents: format!(
                        "#!/bin/sh\n# kiln-test's stand-in python: the base image's python3 with this prefix's site-packages.\nPYTHONPATH=\"{PREFIX_PLACEHOLDER}/lib/python3.12/site-packages${{PYTHONPATH:+:$PYTHONPATH}}\"\nexport PYTHONPATH\nexec /usr/bin/python3 \"$@\"\n"
                    ),
                    executable: true,
                    placeholder: true,
                },
                Payload::Symlink {
                    path: "bin/python3",
                    target: "python3.12",
                },
                Payload::Symlink {
                    path: "bin/python",
                    target: "python3.12",
                },
                Payload::file("lib/python3.12/site-packages/.keep", ""),
            ],
        ));
        packages.push(platform(
            "kiln-postlink",
            "1.0",
            "h0_0",
            Format::TarBz2,
            Vec::new(),
            vec![Payload::File {
                path: "bin/.kiln-postlink-post-link.sh",
                contents: "#!/bin/sh\necho ran > \"$PREFIX/kiln-postlink-ran\"\n".into(),
                executable: true,
                placeholder: false,
            }],
        ));
    }
    packages.push(Package {
        name: "kiln-pyhello",
        version: "1.0",
        build: "pyh0_0",
        subdir: "noarch",
        arch: None,
        depends: vec!["python >=3.8"],
        noarch_python: true,
        entry_points: vec!["kiln-pyhello = kiln_pyhello:main"],
        format: Format::TarBz2,
        payload: vec![Payload::file(
            "site-packages/kiln_pyhello/__init__.py",
            "def main():\n    print(\"hello from kiln-pyhello\")\n",
        )],
    });
    packages.push(Package {
        name: "six",
        version: "1.16.0",
        build: "pyh0_0",
        subdir: "noarch",
        arch: None,
        depends: vec!["python >=3.8"],
        noarch_python: true,
        entry_points: Vec::new(),
        format: Format::TarBz2,
        payload: vec![
            Payload::file(
                "site-packages/six.py",
                "# kiln-test's conda six\n__version__ = \"1.16.0\"\nINSTALLED_BY = \"conda\"\n",
            ),
            Payload::file(
                "site-packages/six-1.16.0.dist-info/METADATA",
                "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n",
            ),
            Payload::file("site-packages/six-1.16.0.dist-info/INSTALLER", "conda\n"),
        ],
    });
    packages
}

/// Writes `package` to `archive`, staging its files and `info/` in a temporary directory.
fn write_package(package: &Package, archive: &Path) {
    let staging = tempfile::tempdir().expect("temp dir");
    let base = staging.path();
    let mut paths_entries = Vec::new();
    let mut has_prefix = String::new();
    let mut payload = package.payload.iter().collect::<Vec<_>>();
    payload.sort_by_key(|entry| entry.path());
    for entry in &payload {
        let path = base.join(entry.path());
        fs::create_dir_all(path.parent().expect("parent")).expect("payload dir");
        match entry {
            Payload::File {
                path: relative,
                contents,
                executable,
                placeholder,
            } => {
                fs::write(&path, contents).expect("payload file");
                let mode = if *executable { 0o755 } else { 0o644 };
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("mode");
                let mut paths_entry = json!({
                    "_path": relative,
                    "path_type": "hardlink",
                    "sha256": hex::encode(Sha256::digest(contents.as_bytes())),
                    "size_in_bytes": contents.len(),
                });
                if *placeholder {
                    assert!(contents.contains(PREFIX_PLACEHOLDER), "{relative}");
                    paths_entry["prefix_placeholder"] = json!(PREFIX_PLACEHOLDER);
                    paths_entry["file_mode"] = json!("text");
                    has_prefix.push_str(&format!("{PREFIX_PLACEHOLDER} text {relative}\n"));
                }
                paths_entries.push(paths_entry);
            }
            Payload::Symlink {
                path: relative,
                target,
            } => {
                std::os::unix::fs::symlink(target, &path).expect("payload symlink");
                // Like rattler, hash the link's target path rather than what it points to.
                paths_entries.push(json!({
                    "_path": relative,
                    "path_type": "softlink",
                    "sha256": hex::encode(Sha256::digest(target.as_bytes())),
                    "size_in_bytes": target.len(),
                }));
            }
        }
    }

    let info = base.join("info");
    fs::create_dir_all(&info).expect("info dir");
    let write_json = |name: &str, value: &Value| {
        let text = serde_json::to_string_pretty(value).expect("json");
        fs::write(info.join(name), text).expect("info file");
    };
    write_json("index.json", &Value::Object(package.index()));
    write_json(
        "paths.json",
        &json!({ "paths": paths_entries, "paths_version": 1 }),
    );
    write_json(
        "about.json",
        &json!({
            "summary": format!("{}: a kiln test package", package.name),
            "description": "Built by kiln's tests for a local channel.",
            "license": "Apache-2.0",
            "home": "https://example.invalid/kiln",
        }),
    );
    let mut files = fs::File::create(info.join("files")).expect("info/files");
    for entry in &payload {
        writeln!(files, "{}", entry.path()).expect("write info/files");
    }
    drop(files);
    let mut info_files = vec![
        "info/about.json",
        "info/files",
        "info/index.json",
        "info/paths.json",
    ];
    if !has_prefix.is_empty() {
        fs::write(info.join("has_prefix"), has_prefix).expect("info/has_prefix");
        info_files.push("info/has_prefix");
    }
    if package.noarch_python {
        write_json(
            "link.json",
            &json!({
                "noarch": { "type": "python", "entry_points": package.entry_points },
                "package_metadata_version": 1,
            }),
        );
        info_files.push("info/link.json");
    }

    let paths = info_files
        .into_iter()
        .chain(payload.iter().map(|entry| entry.path()))
        .map(PathBuf::from)
        .collect::<Vec<_>>();
    write_archive(archive, base, &paths);
}

/// Writes the files `paths` (relative to `base`) as a `.tar.bz2` or `.conda` archive, by the
/// extension of `archive`, with rattler's fixed mtime for every entry.
fn write_archive(archive: &Path, base: &Path, paths: &[PathBuf]) {
    let file_name = archive
        .file_name()
        .and_then(|name| name.to_str())
        .expect("archive file name");
    // rattler wants the paths joined to `base`; it strips `base` again for the archive.
    let paths = paths.iter().map(|path| base.join(path)).collect::<Vec<_>>();
    let file = fs::File::create(archive).expect("create archive");
    if let Some(stem) = file_name.strip_suffix(".conda") {
        rattler_package_streaming::write::write_conda_package(
            file,
            base,
            &paths,
            CompressionLevel::Default,
            Some(1),
            stem,
            None,
            None,
        )
        .expect("write .conda");
    } else {
        assert!(file_name.ends_with(".tar.bz2"), "{file_name}");
        rattler_package_streaming::write::write_tar_bz2_package(
            file,
            base,
            &paths,
            CompressionLevel::Default,
            None,
            None,
        )
        .expect("write .tar.bz2");
    }
}

/// Collects every file and symlink below `base.join(relative)`, relative to `base`.
fn list_files(base: &Path, relative: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(base.join(relative)).expect("read dir") {
        let entry = entry.expect("dir entry");
        let path = relative.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            list_files(base, &path, out);
        } else {
            out.push(path);
        }
    }
}
