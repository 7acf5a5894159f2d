//! The native builder's parts against a real local conda channel: the fixture itself (its
//! repodata parses as rattler reads it, every archive matches its record), then solving,
//! locking and installing from it, and the failures a user must be told about.

use crate::support::{conda_channel, debian_base, native_build, run_image};

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use conda_channel::{CHANNEL_NAME, CondaChannel, PREFIX_PLACEHOLDER, SUBDIRS};
use rattler_conda_types::package::{
    FileMode, IndexJson, LinkJson, NoArchLinks, PackageFile as _, PathType, PathsJson,
};
use rattler_conda_types::{PackageRecord, RepoData};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Fetches `<url>/<subdir>/repodata.json` and parses it as rattler does.
async fn repodata(client: &reqwest::Client, url: &str, subdir: &str) -> RepoData {
    let response = client
        .get(format!("{url}/{subdir}/repodata.json"))
        .send()
        .await
        .expect("GET repodata.json");
    assert_eq!(response.status(), 200, "{subdir}/repodata.json");
    let bytes = response.bytes().await.expect("repodata body");
    serde_json::from_slice(&bytes).expect("repodata.json parses as RepoData")
}

/// Every record of a repodata, `.tar.bz2` and `.conda` alike, with its file name.
fn records(repodata: &RepoData) -> Vec<(String, &PackageRecord)> {
    repodata
        .packages
        .iter()
        .chain(repodata.conda_packages.iter())
        .map(|(file, record)| (file.to_string(), record))
        .collect()
}

/// `name version build` of every record.
fn listing(repodata: &RepoData) -> BTreeSet<String> {
    records(repodata)
        .into_iter()
        .map(|(_, record)| {
            format!(
                "{} {} {}",
                record.name.as_normalized(),
                record.version,
                record.build
            )
        })
        .collect()
}

#[tokio::test]
async fn repodata_over_http_lists_every_package() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    assert!(server.url.ends_with(&format!("/{CHANNEL_NAME}")));
    let client = reqwest::Client::new();

    for subdir in ["linux-64", "linux-aarch64"] {
        let repodata = repodata(&client, &server.url, subdir).await;
        let info = repodata.info.as_ref().expect("info");
        assert_eq!(info.subdir.as_deref(), Some(subdir));
        let expected: BTreeSet<String> = [
            "kiln-hello 1.0 h0_0",
            "kiln-hello 2.0 h0_0",
            "kiln-libgreet 1.0 h0_0",
            "kiln-postlink 1.0 h0_0",
            "python 3.12.0 h0_0",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(listing(&repodata), expected, "{subdir}");
        for (file, record) in records(&repodata) {
            assert_eq!(record.subdir, subdir, "{file}");
            assert!(record.noarch.is_none(), "{file}");
            assert!(record.sha256.is_some() && record.size.is_some(), "{file}");
            assert!(record.md5.is_some() && record.timestamp.is_some(), "{file}");
            assert_eq!(record.license.as_deref(), Some("Apache-2.0"), "{file}");
            match record.name.as_normalized() {
                "kiln-hello" => assert_eq!(record.depends, ["kiln-libgreet >=1.0"], "{file}"),
                _ => assert!(record.depends.is_empty(), "{file}"),
            }
        }
        // kiln-hello 2.0 exercises the `.conda` format, everything else is `.tar.bz2`.
        let conda: Vec<String> = repodata
            .conda_packages
            .keys()
            .map(ToString::to_string)
            .collect();
        assert_eq!(conda, ["kiln-hello-2.0-h0_0.conda"], "{subdir}");
    }

    let noarch = repodata(&client, &server.url, "noarch").await;
    assert_eq!(
        listing(&noarch),
        BTreeSet::from([
            "kiln-pyhello 1.0 pyh0_0".to_string(),
            "six 1.16.0 pyh0_0".to_string()
        ])
    );
    let (_, pyhello) = records(&noarch)
        .into_iter()
        .find(|(_, record)| record.name.as_normalized() == "kiln-pyhello")
        .expect("kiln-pyhello");
    assert!(pyhello.noarch.is_python());
    assert_eq!(pyhello.subdir, "noarch");
    assert_eq!(pyhello.depends, ["python >=3.8"]);
}

#[tokio::test]
async fn every_archive_over_http_matches_its_record_and_is_a_conda_package() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    let client = reqwest::Client::new();
    let downloads = tempfile::tempdir().expect("temp dir");
    let mut placeholders = BTreeSet::new();
    let mut archives = 0;

    for subdir in SUBDIRS {
        let repodata = repodata(&client, &server.url, subdir).await;
        for (file, record) in records(&repodata) {
            archives += 1;
            let response = client
                .get(format!("{}/{subdir}/{file}", server.url))
                .send()
                .await
                .expect("GET archive");
            assert_eq!(response.status(), 200, "{subdir}/{file}");
            let bytes = response.bytes().await.expect("archive body");
            let sha256 = hex::encode(Sha256::digest(&bytes));
            assert_eq!(Some(bytes.len() as u64), record.size, "{subdir}/{file}");
            assert_eq!(
                Some(sha256.as_str()),
                record.sha256.map(hex::encode).as_deref(),
                "{subdir}/{file}"
            );
            assert_eq!(channel.package_sha256(&format!("{subdir}/{file}")), sha256);

            let archive = downloads.path().join(subdir).join(&file);
            std::fs::create_dir_all(archive.parent().expect("parent")).expect("dir");
            std::fs::write(&archive, &bytes).expect("write download");
            let unpacked = downloads.path().join(subdir).join(format!("{file}.d"));
            std::fs::create_dir_all(&unpacked).expect("dir");
            let extracted =
                rattler_package_streaming::fs::extract(&archive, &unpacked).expect("extracts");
            assert_eq!(hex::encode(extracted.sha256), sha256, "{file}");
            assert_eq!(
                Some(hex::encode(extracted.md5)),
                record.md5.map(hex::encode),
                "{file}"
            );

            let index = IndexJson::from_package_directory(&unpacked).expect("info/index.json");
            assert_eq!(index.name, record.name, "{file}");
            assert_eq!(index.version, record.version, "{file}");
            assert_eq!(index.build, record.build, "{file}");
            assert_eq!(index.noarch, record.noarch, "{file}");
            assert_eq!(index.subdir.as_deref(), Some(subdir), "{file}");

            let paths = PathsJson::from_package_directory(&unpacked).expect("info/paths.json");
            assert_eq!(paths.paths_version, 1, "{file}");
            let files = std::fs::read_to_string(unpacked.join("info/files")).expect("info/files");
            let listed: Vec<String> = paths
                .paths
                .iter()
                .map(|entry| entry.relative_path.display().to_string())
                .collect();
            assert_eq!(files.lines().collect::<Vec<_>>(), listed, "{file}");
            for entry in &paths.paths {
                let path = unpacked.join(&entry.relative_path);
                let name = format!("{file}: {}", entry.relative_path.display());
                let content = match entry.path_type {
                    PathType::HardLink => std::fs::read(&path).expect(&name),
                    PathType::SoftLink => {
                        let target = std::fs::read_link(&path).expect(&name);
                        target.display().to_string().into_bytes()
                    }
                    PathType::Directory => panic!("{name}: no directories expected"),
                };
                assert_eq!(entry.size_in_bytes, Some(content.len() as u64), "{name}");
                assert_eq!(
                    entry.sha256.map(hex::encode),
                    Some(hex::encode(Sha256::digest(&content))),
                    "{name}"
                );
                if let Some(prefix) = &entry.prefix_placeholder {
                    assert_eq!(prefix.placeholder, PREFIX_PLACEHOLDER, "{name}");
                    assert_eq!(prefix.file_mode, FileMode::Text, "{name}");
                    let text = String::from_utf8(content).expect(&name);
                    assert!(text.contains(PREFIX_PLACEHOLDER), "{name}");
                    let has_prefix = std::fs::read_to_string(unpacked.join("info/has_prefix"))
                        .expect("info/has_prefix");
                    assert!(has_prefix.contains(&format!(
                        "{PREFIX_PLACEHOLDER} text {}",
                        entry.relative_path.display()
                    )));
                    placeholders.insert(format!(
                        "{} {}",
                        record.name.as_normalized(),
                        entry.relative_path.display()
                    ));
                }
            }
            check_payload(
                record.name.as_normalized(),
                &record.version.to_string(),
                &unpacked,
            );
        }
    }

    assert_eq!(archives, 12);
    assert_eq!(
        placeholders,
        BTreeSet::from([
            "kiln-hello bin/kiln-hello".to_string(),
            "kiln-libgreet share/kiln-libgreet/prefix.txt".to_string(),
            "python bin/python3.12".to_string(),
        ])
    );
}

/// The package-specific contents of an extracted archive.
fn check_payload(name: &str, version: &str, unpacked: &Path) {
    let read = |path: &str| std::fs::read_to_string(unpacked.join(path)).expect(path);
    match name {
        "kiln-hello" => {
            let script = read("bin/kiln-hello");
            assert_eq!(
                script,
                format!(
                    "#!/bin/sh\n. {PREFIX_PLACEHOLDER}/lib/kiln-greet.sh\ngreet \"kiln-hello {version}\"\n"
                )
            );
            let mode = std::fs::metadata(unpacked.join("bin/kiln-hello"))
                .expect("bin/kiln-hello")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755);
        }
        "kiln-libgreet" => {
            assert!(read("lib/kiln-greet.sh").contains("greet() {"));
        }
        "python" => {
            let link = |path: &str| std::fs::read_link(unpacked.join(path)).expect(path);
            assert!(read("bin/python3.12").contains("exec /usr/bin/python3 \"$@\""));
            assert_eq!(link("bin/python3"), Path::new("python3.12"));
            assert_eq!(link("bin/python"), Path::new("python3.12"));
            assert_eq!(read("lib/python3.12/site-packages/.keep"), "");
        }
        "kiln-pyhello" => {
            assert!(read("site-packages/kiln_pyhello/__init__.py").contains("def main():"));
            let link = LinkJson::from_package_directory(unpacked).expect("info/link.json");
            let NoArchLinks::Python(python) = link.noarch else {
                panic!("kiln-pyhello's link.json is not noarch python");
            };
            let entry_points: Vec<String> = python
                .entry_points
                .iter()
                .map(|entry| format!("{} = {}:{}", entry.command, entry.module, entry.function))
                .collect();
            assert_eq!(entry_points, ["kiln-pyhello = kiln_pyhello:main"]);
        }
        "kiln-postlink" => {
            assert!(unpacked.join("bin/.kiln-postlink-post-link.sh").is_file());
        }
        "six" => {
            assert!(read("site-packages/six.py").contains("INSTALLED_BY = \"conda\""));
            assert!(
                read("site-packages/six-1.16.0.dist-info/METADATA").contains("Version: 1.16.0")
            );
        }
        other => panic!("unexpected package {other}"),
    }
}

#[tokio::test]
async fn corrupt_makes_the_served_archive_differ_from_its_record() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    let client = reqwest::Client::new();
    let repodata = repodata(&client, &server.url, "linux-64").await;

    for file in ["kiln-hello-1.0-h0_0.tar.bz2", "kiln-hello-2.0-h0_0.conda"] {
        let path = format!("linux-64/{file}");
        let (_, record) = records(&repodata)
            .into_iter()
            .find(|(name, _)| name == file)
            .expect("record");
        let recorded = hex::encode(record.sha256.expect("sha256"));
        assert_eq!(channel.package_sha256(&path), recorded);

        channel.corrupt(&path);
        assert_ne!(channel.package_sha256(&path), recorded);
        let bytes = client
            .get(format!("{}/{path}", server.url))
            .send()
            .await
            .expect("GET archive")
            .bytes()
            .await
            .expect("body");
        assert_ne!(hex::encode(Sha256::digest(&bytes)), recorded);
        // Still a valid package: only a checksum check notices.
        let unpacked = tempfile::tempdir().expect("temp dir");
        rattler_package_streaming::fs::extract(&channel.dir.join(&path), unpacked.path())
            .expect("a corrupted archive still extracts");
    }
}

#[test]
fn archives_are_reproducible() {
    let first = CondaChannel::build();
    let second = CondaChannel::build();
    for subdir in SUBDIRS {
        let listing = std::fs::read_dir(first.dir.join(subdir)).expect("subdir");
        for entry in listing {
            let name = entry.expect("entry").file_name();
            let path = format!("{subdir}/{}", name.to_string_lossy());
            assert_eq!(
                first.package_sha256(&path),
                second.package_sha256(&path),
                "{path}"
            );
        }
    }
}

/// Sends a raw request line, so that no client normalizes the path first.
async fn raw_status(address: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    response.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn server_answers_404_for_missing_files_and_refuses_paths_outside_the_channel() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    let client = reqwest::Client::new();
    let missing = client
        .get(format!("{}/linux-64/nothing-1.0-0.tar.bz2", server.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    let head = client
        .head(format!("{}/noarch/repodata.json", server.url))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 200);

    let address = server
        .url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .expect("address")
        .to_string();
    for path in [
        format!("/{CHANNEL_NAME}/../{CHANNEL_NAME}/noarch/repodata.json"),
        format!("/{CHANNEL_NAME}/noarch/../noarch/repodata.json"),
        format!("/{CHANNEL_NAME}/%2e%2e/etc/passwd"),
        format!("/{CHANNEL_NAME}//etc/passwd"),
    ] {
        let status = raw_status(&address, &path).await;
        assert!(status.contains(" 400 "), "{path}: {status}");
    }
    let ok = raw_status(&address, &format!("/{CHANNEL_NAME}/noarch/repodata.json")).await;
    assert!(ok.contains(" 200 "), "{ok}");
}

// ---- resolve and install ----

use std::collections::BTreeMap;

use kiln::install::{CondaInstaller, InstallError};
use kiln::resolve::{CondaResolver, ResolveError, Solution, Target};
use kiln::spec::{Platform, Request, RequestInput};

fn request(entries: &[&str]) -> Request {
    Request::try_from(RequestInput {
        entries: entries.iter().map(|e| e.to_string()).collect(),
        channels: vec![CHANNEL_NAME.to_owned()],
        ..RequestInput::default()
    })
    .expect("valid request")
}

fn resolver(url: &str, cache: &Path) -> CondaResolver {
    let mirrors = BTreeMap::from([(CHANNEL_NAME.to_owned(), url.to_owned())]);
    CondaResolver::new(reqwest::Client::new(), cache.to_owned(), mirrors)
}

/// An installer that downloads the test channel's canonical URLs from its server at `url`.
fn installer(url: &str, cache: &Path) -> CondaInstaller {
    let scratch = tempfile::tempdir().expect("temp dir");
    let mirrors = resolver(url, scratch.path())
        .mirror_map()
        .expect("the mirror is a URL");
    CondaInstaller::new(cache.to_owned(), reqwest::Client::new(), mirrors)
}

fn target(platform: Platform) -> Target {
    Target {
        platform,
        glibc: "2.36".into(),
    }
}

async fn solve(url: &str, entries: &[&str], platform: Platform) -> Result<Solution, ResolveError> {
    let cache = tempfile::tempdir().expect("temp dir");
    resolver(url, cache.path())
        .solve(&request(entries), &target(platform))
        .await
}

/// Every file under `root`, relative, sorted.
fn tree(root: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path.clone());
            }
            files.push(path.strip_prefix(root).expect("under root").to_owned());
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn solves_for_each_platform_and_prefers_the_newest_version() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    for (platform, subdir) in [
        (Platform::LinuxAmd64, "linux-64"),
        (Platform::LinuxArm64, "linux-aarch64"),
    ] {
        let solution = solve(&server.url, &["kiln-hello"], platform)
            .await
            .expect("solves");
        let picked: Vec<(&str, &str, &str)> = solution
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.subdir.as_str()))
            .collect();
        assert_eq!(
            picked,
            [
                ("kiln-hello", "2.0", subdir),
                ("kiln-libgreet", "1.0", subdir)
            ]
        );
        for package in &solution.packages {
            let path = format!("{subdir}/{}", package.file_name());
            assert_eq!(package.sha256, channel.package_sha256(&path), "{path}");
            // Named by the channel's canonical URL; the mirror it came through is transport.
            assert_eq!(
                package.url,
                format!("https://conda.anaconda.org/{CHANNEL_NAME}/{path}")
            );
        }
    }
    let pinned = solve(&server.url, &["kiln-hello=1.0"], Platform::LinuxAmd64)
        .await
        .expect("solves");
    assert_eq!(pinned.packages[0].version, "1.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn installs_a_patched_prefix_with_no_trace_of_the_host() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    let solution = solve(
        &server.url,
        &["kiln-hello", "kiln-pyhello"],
        Platform::LinuxAmd64,
    )
    .await
    .expect("solves");
    let mut trees = Vec::new();
    for _ in 0..2 {
        let cache = tempfile::tempdir().expect("temp dir");
        let staging = tempfile::tempdir().expect("temp dir");
        let prefix = staging.path().join("opt/conda");
        installer(&server.url, cache.path())
            .install(&solution, Platform::LinuxAmd64, &prefix)
            .await
            .expect("installs");
        let hello = std::fs::read_to_string(prefix.join("bin/kiln-hello")).expect("script");
        assert!(hello.contains(". /opt/conda/lib/kiln-greet.sh"), "{hello}");
        assert!(!hello.contains(PREFIX_PLACEHOLDER));
        let entry_point =
            std::fs::read_to_string(prefix.join("bin/kiln-pyhello")).expect("entry point");
        assert!(
            entry_point.starts_with("#!/opt/conda/bin/python3.12"),
            "{entry_point}"
        );
        assert!(!prefix.join("CACHEDIR.TAG").exists());
        // A package's symlinks stay symlinks, not unpatched copies of their targets.
        assert_eq!(
            std::fs::read_link(prefix.join("bin/python3")).expect("bin/python3 is a symlink"),
            Path::new("python3.12")
        );
        let files = tree(&prefix);
        for file in &files {
            let path = prefix.join(file);
            if path.is_file() && !path.is_symlink() {
                let bytes = std::fs::read(&path).expect("read");
                let text = String::from_utf8_lossy(&bytes);
                for host in [cache.path(), staging.path()] {
                    assert!(
                        !text.contains(&*host.to_string_lossy()),
                        "{} mentions the host path {}",
                        file.display(),
                        host.display()
                    );
                }
                assert!(
                    !text.contains("127.0.0.1"),
                    "{} mentions the mirror the packages came through",
                    file.display()
                );
            }
        }
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(prefix.join("conda-meta/kiln-hello-2.0-h0_0.json")).expect("record"),
        )
        .expect("JSON");
        assert_eq!(
            record["url"],
            format!("https://conda.anaconda.org/{CHANNEL_NAME}/linux-64/kiln-hello-2.0-h0_0.conda"),
            "conda-meta names the package by its canonical URL"
        );
        let layer_dir = tempfile::tempdir().expect("temp dir");
        let layer =
            kiln::assemble::write_fragment(&prefix, &files, layer_dir.path()).expect("layer");
        trees.push(layer.diff_id);
    }
    assert_eq!(
        trees[0], trees[1],
        "two installs from two caches give the same bytes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_say_what_went_wrong() {
    let channel = CondaChannel::build();
    let server = channel.serve();

    let err = solve(&server.url, &["kiln-hello=9.9"], Platform::LinuxAmd64)
        .await
        .unwrap_err();
    assert!(matches!(err, ResolveError::Unsatisfiable { .. }), "{err}");
    assert!(err.to_string().contains("kiln-hello"), "{err}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}/kiln-test", closed.local_addr().expect("address"));
    drop(closed);
    let err = solve(&dead_url, &["kiln-hello"], Platform::LinuxAmd64)
        .await
        .unwrap_err();
    assert!(matches!(err, ResolveError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("is not reachable"), "{err}");

    let staging = tempfile::tempdir().expect("temp dir");
    let cache = tempfile::tempdir().expect("temp dir");
    let installer = installer(&server.url, cache.path());
    let postlink = solve(&server.url, &["kiln-postlink"], Platform::LinuxAmd64)
        .await
        .expect("solves");
    let err = installer
        .install(&postlink, Platform::LinuxAmd64, &staging.path().join("a"))
        .await
        .unwrap_err();
    assert!(matches!(err, InstallError::LinkScripts(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "package has post-link scripts, which kiln does not run when it builds natively: kiln-postlink"
    );

    let solution = solve(&server.url, &["kiln-libgreet"], Platform::LinuxAmd64)
        .await
        .expect("solves");
    channel.corrupt(&format!("linux-64/{}", solution.packages[0].file_name()));
    let err = installer
        .install(&solution, Platform::LinuxAmd64, &staging.path().join("b"))
        .await
        .unwrap_err();
    let message = err.to_string().to_lowercase();
    assert!(
        message.contains("hash") || message.contains("sha256"),
        "{message}"
    );
}

// ---- native builds, end to end ----

use crate::support::{PUSHER, TestApp};
use debian_base::push_debian_python_base;
use kiln::store::BuildOutcome;
use native_build::{BASE_REPOSITORY, build, builder, pusher};
use run_image::run_in_image;

/// The layers of the manifest for `platform` behind `image`.
async fn layers_of(app: &TestApp, image: &str, manifest_digest: &str) -> Vec<String> {
    let repository = image
        .split_once('/')
        .and_then(|(_, rest)| rest.rsplit_once(':'))
        .map(|(repository, _)| repository.to_owned())
        .expect("image has a repository");
    let (bytes, _) = pusher(app)
        .pull_manifest(
            &repository,
            manifest_digest,
            &[kiln::assemble::MEDIA_TYPE_MANIFEST],
        )
        .await
        .expect("manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn native_builds_run_are_reproducible_and_share_layers() {
    let app = TestApp::start().await;
    let channel = CondaChannel::build();
    let server = channel.serve();
    push_debian_python_base(&pusher(&app), BASE_REPOSITORY).await;

    let data_a = tempfile::tempdir().expect("temp dir");
    let backend_a = builder(&app, &server.url, data_a.path()).await;
    let (outcome, image, log) = build(
        &backend_a,
        &app,
        &["kiln-hello", "kiln-pyhello"],
        &["linux/amd64", "linux/arm64"],
        "",
    )
    .await;
    println!("{log}");
    let BuildOutcome::Succeeded { outputs, lock, .. } = outcome else {
        panic!("the build failed: {outcome:?}\n{log}");
    };
    assert!(lock.expect("a lock").contains("kiln-hello-2.0-h0_0.conda#"));
    for (platform, arch) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")] {
        let printed = run_in_image(&image, platform, &["kiln-hello"]);
        assert_eq!(
            printed.trim(),
            format!("hello from kiln-hello 2.0 on {arch}")
        );
    }
    assert_eq!(
        run_in_image(&image, "linux/amd64", &["kiln-pyhello"]).trim(),
        "hello from kiln-pyhello"
    );

    // The same request from another data directory: the same manifests, byte for byte.
    let data_b = tempfile::tempdir().expect("temp dir");
    let backend_b = builder(&app, &server.url, data_b.path()).await;
    let (again, _, log_b) = build(
        &backend_b,
        &app,
        &["kiln-hello", "kiln-pyhello"],
        &["linux/amd64", "linux/arm64"],
        "-again",
    )
    .await;
    let BuildOutcome::Succeeded {
        outputs: outputs_b, ..
    } = again
    else {
        panic!("the second build failed: {again:?}\n{log_b}");
    };
    assert_eq!(
        outputs, outputs_b,
        "same request, same lock, same manifests"
    );

    // A new combination of known packages: kiln-pyhello and python as in the first image, and
    // kiln-hello 1.0 instead of 2.0. Only kiln-hello 1.0 is installed and compressed; the
    // others' layers are the first image's, byte for byte, and are not uploaded again. (Small
    // packages share layers by a hash of their names: kiln-hello and kiln-libgreet share one,
    // which changes with kiln-hello's version; kiln-pyhello's and python's do not.)
    let (other, other_image, log_c) = build(
        &backend_a,
        &app,
        &["kiln-hello=1.0", "kiln-pyhello"],
        &["linux/amd64"],
        "",
    )
    .await;
    let BuildOutcome::Succeeded {
        outputs: outputs_c, ..
    } = other
    else {
        panic!("the third build failed: {other:?}\n{log_c}");
    };
    assert!(
        log_c.contains(
            "linux/amd64: 1 of 4 conda packages installed and compressed into their layers, 3 \
             reused from the layer cache"
        ),
        "only kiln-hello 1.0 is installed: {log_c}"
    );
    let first = layers_of(&app, &image, &outputs[0].digest).await;
    let second = layers_of(&app, &other_image, &outputs_c[0].digest).await;
    let shared: Vec<&String> = first.iter().filter(|l| second.contains(l)).collect();
    assert_eq!(
        (shared.len(), second.len()),
        (3, 4),
        "the base layer and kiln-pyhello's and python's layers are shared, kiln-hello's is new: \
         {first:?} vs {second:?}"
    );
    let (uploaded, total) = log_c
        .lines()
        .find_map(|line| {
            let (_, counts) = line.split_once(" (")?;
            let (uploaded, rest) = counts.split_once(" of ")?;
            let (total, _) = rest.split_once(" layers uploaded")?;
            Some((
                uploaded.parse::<usize>().ok()?,
                total.parse::<usize>().ok()?,
            ))
        })
        .expect("the log says how many layers were uploaded");
    assert_eq!(
        (uploaded, total),
        (1, 3),
        "the shared layers were not uploaded again: {log_c}"
    );
    assert_eq!(
        run_in_image(&other_image, "linux/amd64", &["kiln-hello"]).trim(),
        "hello from kiln-hello 1.0 on x86_64"
    );
    let health = reqwest::get(app.url("/health")).await.expect("health");
    assert_eq!(health.status(), 200);

    // `kiln build` runs the same code from the command line and prints the image URI.
    let cli_data = tempfile::tempdir().expect("temp dir");
    let config_path = cli_data.path().join("kiln.toml");
    std::fs::write(
        &config_path,
        format!(
            "registry = \"{}\"\ndata_dir = \"{}\"\nchannels = [\"{CHANNEL_NAME}\"]\n\n[channel_mirrors]\n{CHANNEL_NAME} = \"{}\"\n\n[build]\npush_user = \"{}\"\npush_password = \"{}\"\n",
            app.address,
            cli_data.path().join("data").display(),
            server.url,
            PUSHER.0,
            PUSHER.1
        ),
    )
    .expect("write config");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--config")
        .arg(&config_path)
        .args(["build", "kiln-libgreet"])
        .env_clear()
        .output()
        .await
        .expect("kiln build runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kiln build failed:\n{stderr}");
    let uri = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        uri.starts_with(&format!("{}/library/kiln-libgreet:", app.address)),
        "{uri}"
    );
    assert!(
        stderr.contains("solved 1 conda packages"),
        "the log is shown: {stderr}"
    );
    let tag = uri.rsplit(':').next().expect("tag");
    assert!(
        pusher(&app)
            .tag_digest("library/kiln-libgreet", tag)
            .await
            .expect("HEAD")
            .is_some(),
        "the image is in the registry"
    );
}
