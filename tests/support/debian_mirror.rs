//! A real, signed Debian archive (suite `kiln`, component `main`, amd64 and arm64) built in a
//! temporary directory and served over HTTP on 127.0.0.1, for tests that read a mirror without
//! Debian's: `.deb` files made by `dpkg-deb --build`, `Packages` and `Packages.xz` per
//! architecture, a `Release` listing their sha256, clear-signed into `InRelease` with a
//! throwaway key made by `gpg --batch` (its public key is [`DebianMirror::keyring`], to give as
//! `[base] debian_keyring`).
//!
//! The default packages ([`default_packages`]; `any` ones are built for each architecture):
//!
//! | package | relations | what it holds |
//! | --- | --- | --- |
//! | `kiln-base` 1.0-1 all | Essential, Priority: required | `/etc/kiln-release` |
//! | `kiln-libc` 2.36-9 any | Multi-Arch: same | `/usr/lib/<triplet>/libkiln.so.1` |
//! | `kiln-shell` 5.2-1 any | Pre-Depends: `kiln-libc (>= 2.36)`; Depends: `kiln-base`; Provides: `kiln-sh` | `/usr/bin/kiln-shell` (a sh script), `/bin/kiln-sh → ../usr/bin/kiln-shell` |
//! | `kiln-tool` 1.0-1 any | Depends: `kiln-libc (>= 2.36), kiln-missing \| kiln-utils, kiln-usrmerge \| kiln-merged, kiln-awk, kiln-shell:any` | `/usr/bin/kiln-tool` |
//! | `kiln-utils` 1.0-1 all (gzip data) | | `/usr/share/kiln-utils/README` |
//! | `kiln-merged` 37 all | | `/usr/share/kiln-merged/README` |
//! | `kiln-usrmerge` 39 all | Depends: `kiln-perl` | |
//! | `kiln-perl` 5.36-1 any | | |
//! | `kiln-mawk` 1.3.4-1 any | Provides: `kiln-awk`; Priority: required | |
//! | `kiln-gawk` 1:5.2-1 any | Provides: `kiln-awk`; Priority: optional | |
//! | `kiln-python` 3.11.2-6 any | Provides: `kiln-python-abi (= 3.11)` | |
//! | `kiln-pyapp` 1.0-1 all | Depends: `kiln-python-abi (>= 3.11)` | |
//! | `kiln-broken` 1.0-1 all | Depends: `kiln-nowhere` (not in the archive) | |
//!
//! So the closure of `kiln-tool kiln-merged` is `kiln-base kiln-libc kiln-mawk kiln-merged
//! kiln-shell kiln-tool kiln-utils` (the root `kiln-merged` meets `kiln-usrmerge | kiln-merged`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

/// The suite (and codename) of the archive.
pub const SUITE: &str = "kiln";

/// The architectures the archive has.
pub const ARCHITECTURES: [&str; 2] = ["amd64", "arm64"];

/// The first path segment the server answers under: the mirror URL is `http://…/debian`.
const ROOT: &str = "debian";

/// Every file's mtime inside the `.deb` files and the Release date (2023-01-01).
const SOURCE_DATE_EPOCH: &str = "1672531200";

/// One package of the test archive.
#[derive(Debug, Clone)]
pub struct TestPackage {
    pub name: &'static str,
    pub version: &'static str,
    /// `all`, or `any` for one package per architecture.
    pub architecture: &'static str,
    /// Further control fields, e.g. `("Depends", "kiln-libc (>= 2.36)")`.
    pub fields: Vec<(&'static str, &'static str)>,
    /// Files: path (absolute in the image), contents, mode. `{triplet}` in a path is replaced
    /// by the architecture's multiarch triplet.
    pub files: Vec<(&'static str, &'static str, u32)>,
    /// Symbolic links: path, target.
    pub symlinks: Vec<(&'static str, &'static str)>,
    /// `dpkg-deb -Z`: `xz` or `gzip`.
    pub compression: &'static str,
}

impl TestPackage {
    /// A package with no relations and one file, `/usr/share/<name>/README`.
    pub fn new(name: &'static str, version: &'static str, architecture: &'static str) -> Self {
        TestPackage {
            name,
            version,
            architecture,
            fields: Vec::new(),
            files: Vec::new(),
            symlinks: Vec::new(),
            compression: "xz",
        }
    }

    pub fn field(mut self, name: &'static str, value: &'static str) -> Self {
        self.fields.push((name, value));
        self
    }

    pub fn file(mut self, path: &'static str, contents: &'static str, mode: u32) -> Self {
        self.files.push((path, contents, mode));
        self
    }

    pub fn symlink(mut self, path: &'static str, target: &'static str) -> Self {
        self.symlinks.push((path, target));
        self
    }
}

/// The packages described in the module documentation.
pub fn default_packages() -> Vec<TestPackage> {
    let mut utils = TestPackage::new("kiln-utils", "1.0-1", "all").file(
        "/usr/share/kiln-utils/README",
        "kiln utils\n",
        0o644,
    );
    utils.compression = "gzip";
    vec![
        TestPackage::new("kiln-base", "1.0-1", "all")
            .field("Essential", "yes")
            .field("Priority", "required")
            .file("/etc/kiln-release", "kiln test archive\n", 0o644),
        TestPackage::new("kiln-libc", "2.36-9", "any")
            .field("Multi-Arch", "same")
            .field("Priority", "optional")
            .file(
                "/usr/lib/{triplet}/libkiln.so.1",
                "not really a library\n",
                0o644,
            ),
        TestPackage::new("kiln-shell", "5.2-1", "any")
            .field("Pre-Depends", "kiln-libc (>= 2.36)")
            .field("Depends", "kiln-base")
            .field("Provides", "kiln-sh")
            .file(
                "/usr/bin/kiln-shell",
                "#!/bin/sh\necho kiln-shell \"$@\"\n",
                0o755,
            )
            .symlink("/bin/kiln-sh", "../usr/bin/kiln-shell"),
        TestPackage::new("kiln-tool", "1.0-1", "any")
            .field(
                "Depends",
                "kiln-libc (>= 2.36), kiln-missing | kiln-utils, kiln-usrmerge | kiln-merged, \
                 kiln-awk, kiln-shell:any",
            )
            .file("/usr/bin/kiln-tool", "#!/bin/sh\necho kiln-tool\n", 0o755),
        utils,
        TestPackage::new("kiln-merged", "37", "all").file(
            "/usr/share/kiln-merged/README",
            "merged\n",
            0o644,
        ),
        TestPackage::new("kiln-usrmerge", "39", "all").field("Depends", "kiln-perl"),
        TestPackage::new("kiln-perl", "5.36-1", "any"),
        TestPackage::new("kiln-mawk", "1.3.4-1", "any")
            .field("Provides", "kiln-awk")
            .field("Priority", "required"),
        TestPackage::new("kiln-gawk", "1:5.2-1", "any")
            .field("Provides", "kiln-awk")
            .field("Priority", "optional"),
        TestPackage::new("kiln-python", "3.11.2-6", "any")
            .field("Provides", "kiln-python-abi (= 3.11)"),
        TestPackage::new("kiln-pyapp", "1.0-1", "all")
            .field("Depends", "kiln-python-abi (>= 3.11)"),
        TestPackage::new("kiln-broken", "1.0-1", "all").field("Depends", "kiln-nowhere"),
    ]
}

/// A signed test archive in a temporary directory, removed (and its gpg agent stopped) on drop.
#[derive(Debug)]
pub struct DebianMirror {
    /// The archive root (holding `dists/` and `pool/`).
    pub dir: PathBuf,
    /// The signing key's public key, binary, for `Keyring::load` / `[base] debian_keyring`.
    pub keyring: PathBuf,
    gnupg: PathBuf,
    temp: TempDir,
}

impl DebianMirror {
    /// The archive with [`default_packages`].
    pub fn build() -> DebianMirror {
        DebianMirror::build_with(&default_packages())
    }

    /// An archive of `packages`, signed by a fresh key.
    pub fn build_with(packages: &[TestPackage]) -> DebianMirror {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join(ROOT);
        let gnupg = temp.path().join("gnupg");
        fs::create_dir_all(&dir).expect("archive dir");
        let fingerprint = new_key(&gnupg, "kiln test archive <archive@kiln.invalid>");
        let keyring = temp.path().join("archive-keyring.gpg");
        let exported = gpg(&gnupg)
            .args(["--export", &fingerprint])
            .output()
            .expect("gpg runs");
        assert!(
            exported.status.success() && !exported.stdout.is_empty(),
            "gpg --export"
        );
        fs::write(&keyring, &exported.stdout).expect("write keyring");

        let mut stanzas: BTreeMap<&str, String> = BTreeMap::new();
        for package in packages {
            for arch in ARCHITECTURES {
                if package.architecture == "all" && arch != ARCHITECTURES[0] {
                    continue;
                }
                let deb_arch = if package.architecture == "all" {
                    "all"
                } else {
                    arch
                };
                let (filename, control) = build_deb(temp.path(), &dir, package, deb_arch, arch);
                let deb = fs::read(dir.join(&filename)).expect("read deb");
                let stanza = format!(
                    "{control}Filename: {filename}\nSize: {}\nSHA256: {}\n\n",
                    deb.len(),
                    hex::encode(Sha256::digest(&deb))
                );
                let targets: Vec<&str> = if deb_arch == "all" {
                    ARCHITECTURES.to_vec()
                } else {
                    vec![arch]
                };
                for target in targets {
                    stanzas.entry(target).or_default().push_str(&stanza);
                }
            }
        }
        for arch in ARCHITECTURES {
            let binary = dir.join(format!("dists/{SUITE}/main/binary-{arch}"));
            fs::create_dir_all(&binary).expect("binary dir");
            let text = stanzas.remove(arch).unwrap_or_default();
            fs::write(binary.join("Packages"), &text).expect("write Packages");
            fs::write(binary.join("Packages.xz"), xz(text.as_bytes())).expect("write xz");
        }
        let mirror = DebianMirror {
            dir,
            keyring,
            gnupg,
            temp,
        };
        mirror.write_release(None);
        mirror.sign_release(&fingerprint);
        mirror
    }

    /// Serves the archive on a free 127.0.0.1 port from a thread of its own until dropped.
    pub fn serve(&self) -> MirrorServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let address = listener.local_addr().expect("local address");
        let root = self.dir.clone();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
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
                    let log = Arc::clone(&log);
                    async move {
                        log.lock().expect("log").push(uri.path().to_owned());
                        serve_file(&root, &method, &uri).await
                    }
                });
                tokio::select! {
                    result = axum::serve(listener, router).into_future() => {
                        result.expect("mirror server runs");
                    }
                    _ = stopped => {}
                }
            });
        });
        MirrorServer {
            url: format!("http://{address}/{ROOT}"),
            requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Changes the file at `path` (relative to the archive root, e.g.
    /// `dists/kiln/main/binary-amd64/Packages.xz`) after signing: a `.xz` stays a valid xz of
    /// an index with one more stanza; any other file gets its last byte flipped.
    pub fn tamper(&self, path: &str) {
        let file = self.dir.join(path);
        let bytes = fs::read(&file).expect("read file to tamper");
        let tampered = if path.ends_with(".xz") {
            let mut text = String::new();
            liblzma::read::XzDecoder::new(&bytes[..])
                .read_to_string(&mut text)
                .expect("xz decodes");
            text.push_str(
                "Package: kiln-evil\nVersion: 1\nArchitecture: all\nFilename: pool/evil.deb\n\
                 Size: 1\nSHA256: 0000000000000000000000000000000000000000000000000000000000000000\n\n",
            );
            xz(text.as_bytes())
        } else {
            let mut bytes = bytes.clone();
            let last = bytes.last_mut().expect("file not empty");
            *last ^= 0xff;
            bytes
        };
        assert_ne!(bytes, tampered);
        fs::write(&file, tampered).expect("write tampered file");
    }

    /// Signs `InRelease` again, with a new key nobody trusts.
    pub fn resign_with_unknown_key(&self) {
        let gnupg = self.temp.path().join("gnupg-unknown");
        let fingerprint = new_key(&gnupg, "kiln unknown signer <unknown@kiln.invalid>");
        let release = self.dir.join(format!("dists/{SUITE}/Release"));
        let signed = self.dir.join(format!("dists/{SUITE}/InRelease"));
        let status = gpg(&gnupg)
            .args([
                "--yes",
                "--clearsign",
                "--local-user",
                &fingerprint,
                "--output",
            ])
            .arg(&signed)
            .arg(&release)
            .status()
            .expect("gpg runs");
        assert!(status.success(), "gpg --clearsign");
        stop_agent(&gnupg);
    }

    /// Edits the signed text of `InRelease` (a `Date` second) without signing it again.
    pub fn edit_in_release(&self) {
        let path = self.dir.join(format!("dists/{SUITE}/InRelease"));
        let text = fs::read_to_string(&path).expect("read InRelease");
        let edited = text.replacen("00:00:00 UTC", "00:00:01 UTC", 1);
        assert_ne!(text, edited, "InRelease has the expected Date");
        fs::write(&path, edited).expect("write InRelease");
    }

    /// Writes `Release` again with a `Valid-Until` (RFC 2822) and signs it with the archive key.
    pub fn set_valid_until(&self, valid_until: &str) {
        self.write_release(Some(valid_until));
        let listed = gpg(&self.gnupg)
            .args(["--list-secret-keys", "--with-colons"])
            .output()
            .expect("gpg runs");
        let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
        let fingerprint = listing
            .lines()
            .find_map(|line| {
                line.strip_prefix("fpr:")
                    .map(|f| f.trim_matches(':').to_owned())
            })
            .expect("the archive key");
        self.sign_release(&fingerprint);
    }

    fn write_release(&self, valid_until: Option<&str>) {
        let mut release = format!(
            "Origin: kiln\nLabel: kiln\nSuite: {SUITE}\nCodename: {SUITE}\n\
             Date: Sun, 01 Jan 2023 00:00:00 UTC\n"
        );
        if let Some(valid_until) = valid_until {
            release.push_str(&format!("Valid-Until: {valid_until}\n"));
        }
        release.push_str(&format!(
            "Architectures: {}\nComponents: main\nDescription: kiln test archive\nSHA256:\n",
            ARCHITECTURES.join(" ")
        ));
        for arch in ARCHITECTURES {
            for name in ["Packages", "Packages.xz"] {
                let path = format!("main/binary-{arch}/{name}");
                let bytes =
                    fs::read(self.dir.join(format!("dists/{SUITE}/{path}"))).expect("index");
                release.push_str(&format!(
                    " {} {:>8} {path}\n",
                    hex::encode(Sha256::digest(&bytes)),
                    bytes.len()
                ));
            }
        }
        fs::write(self.dir.join(format!("dists/{SUITE}/Release")), release).expect("Release");
    }

    fn sign_release(&self, fingerprint: &str) {
        let release = self.dir.join(format!("dists/{SUITE}/Release"));
        let signed = self.dir.join(format!("dists/{SUITE}/InRelease"));
        let status = gpg(&self.gnupg)
            .args([
                "--yes",
                "--clearsign",
                "--local-user",
                fingerprint,
                "--output",
            ])
            .arg(&signed)
            .arg(&release)
            .status()
            .expect("gpg runs");
        assert!(status.success(), "gpg --clearsign");
    }
}

impl Drop for DebianMirror {
    fn drop(&mut self) {
        stop_agent(&self.gnupg);
    }
}

/// The HTTP server of a [`DebianMirror`]; stops when dropped.
#[derive(Debug)]
pub struct MirrorServer {
    /// The mirror URL, `http://127.0.0.1:PORT/debian`.
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MirrorServer {
    /// The paths requested so far, in order (`/debian/dists/kiln/InRelease`, …).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("log").clone()
    }
}

impl Drop for MirrorServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers GET and HEAD under `/debian/` from the archive directory.
async fn serve_file(root: &Path, method: &Method, uri: &Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Some(rest) = uri.path().strip_prefix(&format!("/{ROOT}/")) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut path = root.to_path_buf();
    for segment in rest.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." || segment.contains('\\') {
            return StatusCode::BAD_REQUEST.into_response();
        }
        path.push(segment);
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) if path.is_file() => (StatusCode::OK, bytes).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `gpg --batch` with its own home directory and no agent autostart surprises.
fn gpg(home: &Path) -> Command {
    let mut command = Command::new("gpg");
    command.env("GNUPGHOME", home).args([
        "--batch",
        "--quiet",
        "--no-tty",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]);
    command
}

/// Makes an Ed25519 signing key without passphrase in a new home `home`; returns its
/// fingerprint.
fn new_key(home: &Path, user_id: &str) -> String {
    fs::create_dir_all(home).expect("gnupg home");
    fs::set_permissions(home, fs::Permissions::from_mode(0o700)).expect("gnupg home mode");
    let status = gpg(home)
        .args(["--quick-generate-key", user_id, "ed25519", "sign", "never"])
        .status()
        .expect("gpg runs");
    assert!(status.success(), "gpg --quick-generate-key");
    let listed = gpg(home)
        .args(["--list-secret-keys", "--with-colons"])
        .output()
        .expect("gpg runs");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .find_map(|line| {
            line.strip_prefix("fpr:")
                .map(|f| f.trim_matches(':').to_owned())
        })
        .expect("the new key's fingerprint")
}

fn stop_agent(home: &Path) {
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", home)
        .args(["--kill", "gpg-agent"])
        .status();
}

fn xz(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 6);
    encoder.write_all(bytes).expect("xz");
    encoder.finish().expect("xz")
}

/// Builds `package` for `deb_arch` (`all` or an architecture) into the pool; returns its
/// `Filename` and its control stanza (without `Filename`, `Size`, `SHA256`).
fn build_deb(
    work: &Path,
    archive: &Path,
    package: &TestPackage,
    deb_arch: &str,
    arch: &str,
) -> (String, String) {
    let triplet = match arch {
        "amd64" => "x86_64-linux-gnu",
        "arm64" => "aarch64-linux-gnu",
        other => panic!("no triplet for {other}"),
    };
    let stage = work.join(format!("stage-{}-{deb_arch}", package.name));
    fs::create_dir_all(stage.join("DEBIAN")).expect("stage");
    let mut control = format!(
        "Package: {}\nVersion: {}\nArchitecture: {deb_arch}\n\
         Maintainer: kiln tests <tests@kiln.invalid>\n",
        package.name, package.version
    );
    for (name, value) in &package.fields {
        control.push_str(&format!("{name}: {value}\n"));
    }
    control.push_str(&format!(
        "Description: {} for kiln's tests\n a package of the kiln test archive\n",
        package.name
    ));
    fs::write(stage.join("DEBIAN/control"), &control).expect("control");
    for (path, contents, mode) in &package.files {
        let path = stage.join(path.trim_start_matches('/').replace("{triplet}", triplet));
        fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        fs::write(&path, contents).expect("file");
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).expect("mode");
    }
    for (path, target) in &package.symlinks {
        let path = stage.join(path.trim_start_matches('/'));
        fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        std::os::unix::fs::symlink(target, &path).expect("symlink");
    }
    let upstream = package
        .version
        .split_once(':')
        .map_or(package.version, |(_, rest)| rest);
    let filename = format!(
        "pool/main/k/{0}/{0}_{upstream}_{deb_arch}.deb",
        package.name
    );
    let deb = archive.join(&filename);
    fs::create_dir_all(deb.parent().expect("parent")).expect("pool dir");
    let output = Command::new("dpkg-deb")
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .args(["--root-owner-group", "-Z", package.compression, "--build"])
        .arg(&stage)
        .arg(&deb)
        .output()
        .expect("dpkg-deb runs");
    assert!(
        output.status.success(),
        "dpkg-deb --build {}: {}",
        package.name,
        String::from_utf8_lossy(&output.stderr)
    );
    (filename, control)
}
