//! Reading a Debian archive: a local signed test archive through `Mirror` (index, closure and
//! `.deb` files verified and cached; tampered files, foreign signatures and missing packages
//! refused by name), and Debian's own mirror with the embedded keys.

use crate::support::debian_mirror;

use std::path::PathBuf;
use std::time::Instant;

use debian_mirror::{DebianMirror, SUITE};
use kiln::base::debian::closure::closure;
use kiln::base::debian::error::DebianError;
use kiln::base::debian::keyring::Keyring;
use kiln::base::debian::mirror::Mirror;
use sha2::{Digest as _, Sha256};
use url::Url;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("kiln-tests/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client")
}

fn local_mirror(url: &str, archive: &DebianMirror, cache: PathBuf) -> Mirror {
    let keyring = Keyring::load(&archive.keyring).expect("the test key loads");
    Mirror::new(http(), Url::parse(url).expect("URL"), SUITE, keyring, cache)
}

fn names(stanzas: &[kiln::base::debian::packages::Stanza]) -> Vec<&str> {
    stanzas.iter().map(|s| s.package.as_str()).collect()
}

#[tokio::test]
async fn local_archive_index_closure_and_debs_are_verified_and_cached() {
    let archive = DebianMirror::build();
    let server = archive.serve();
    let cache = tempfile::tempdir().expect("temp dir");
    let mirror = local_mirror(&server.url, &archive, cache.path().to_owned());
    assert_eq!(mirror.url().as_str(), format!("{}/", server.url));
    assert_eq!(mirror.suite(), SUITE);

    for arch in ["amd64", "arm64"] {
        let index = mirror.packages(arch).await.expect("the index verifies");
        assert_eq!((index.suite(), index.arch()), (SUITE, arch));
        let packages = closure(&index, &["kiln-tool", "kiln-merged"]).expect("resolves");
        assert_eq!(
            names(&packages),
            [
                "kiln-base",
                "kiln-libc",
                "kiln-mawk",
                "kiln-merged",
                "kiln-shell",
                "kiln-tool",
                "kiln-utils"
            ]
        );
        let libc = &packages[1];
        assert_eq!(libc.architecture, arch);
        assert_eq!(libc.multi_arch.as_deref(), Some("same"));
        assert!(libc.text.starts_with("Package: kiln-libc\n") && libc.text.ends_with('\n'));
        let versioned = closure(&index, &["kiln-pyapp"]).expect("a versioned Provides");
        assert_eq!(names(&versioned), ["kiln-pyapp", "kiln-python"]);

        let debs = mirror.debs(&packages).await.expect("the debs download");
        assert_eq!(debs.len(), packages.len());
        for (deb, stanza) in debs.iter().zip(&packages) {
            let bytes = std::fs::read(deb).expect("cached deb");
            assert_eq!(hex::encode(Sha256::digest(&bytes)), stanza.sha256);
            assert!(
                bytes.starts_with(b"!<arch>\ndebian-binary"),
                "{}",
                deb.display()
            );
            assert_eq!(
                deb,
                &cache.path().join(format!("debs/{}.deb", stanza.sha256))
            );
        }
    }
    let packages_xz = |log: &[String]| {
        log.iter()
            .filter(|path| path.ends_with("/Packages.xz"))
            .count()
    };
    let debs_fetched = |log: &[String]| log.iter().filter(|p| p.ends_with(".deb")).count();
    let before = server.requests();
    assert_eq!(packages_xz(&before), 2);

    // A second kiln process with the same cache downloads only InRelease again.
    let again = local_mirror(&server.url, &archive, cache.path().to_owned());
    let index = again.packages("amd64").await.expect("cached index");
    let packages = closure(&index, &["kiln-tool", "kiln-merged"]).expect("resolves");
    again.debs(&packages).await.expect("cached debs");
    let after = server.requests();
    assert_eq!(packages_xz(&after), 2, "{after:?}");
    assert_eq!(debs_fetched(&after), debs_fetched(&before), "{after:?}");
    assert_eq!(
        after.len(),
        before.len() + 1,
        "only InRelease again: {after:?}"
    );

    // A cached file that changed on disk is downloaded again, not used.
    let tool = packages
        .iter()
        .find(|s| s.package == "kiln-tool")
        .expect("kiln-tool");
    let cached = cache.path().join(format!("debs/{}.deb", tool.sha256));
    std::fs::write(&cached, vec![0u8; tool.size as usize]).expect("corrupt the cache");
    again.debs(&packages).await.expect("downloaded again");
    let bytes = std::fs::read(&cached).expect("cached deb");
    assert_eq!(hex::encode(Sha256::digest(&bytes)), tool.sha256);
    assert_eq!(debs_fetched(&server.requests()), debs_fetched(&after) + 1);
}

#[tokio::test]
async fn a_packages_file_changed_after_signing_is_refused_by_name() {
    let archive = DebianMirror::build();
    archive.tamper(&format!("dists/{SUITE}/main/binary-amd64/Packages.xz"));
    let server = archive.serve();
    let cache = tempfile::tempdir().expect("temp dir");
    let mirror = local_mirror(&server.url, &archive, cache.path().to_owned());
    let error = mirror.packages("amd64").await.expect_err("tampered");
    let message = error.to_string();
    assert!(
        matches!(error, DebianError::Mismatch { .. })
            && message.contains("main/binary-amd64/Packages.xz")
            && message.contains(&server.url),
        "{message}"
    );
    assert!(
        std::fs::read_dir(cache.path().join("indexes"))
            .expect("index cache dir")
            .next()
            .is_none(),
        "nothing of the tampered file is kept"
    );
    // The other architecture's index is untouched and still verifies.
    mirror.packages("arm64").await.expect("arm64 verifies");
}

#[tokio::test]
async fn a_deb_changed_after_signing_is_refused_by_name() {
    let archive = DebianMirror::build();
    let server = archive.serve();
    let cache = tempfile::tempdir().expect("temp dir");
    let mirror = local_mirror(&server.url, &archive, cache.path().to_owned());
    let index = mirror.packages("arm64").await.expect("index");
    let packages = closure(&index, &["kiln-shell"]).expect("resolves");
    let shell = packages
        .iter()
        .find(|s| s.package == "kiln-shell")
        .expect("kiln-shell");
    archive.tamper(&shell.filename);
    let error = mirror.debs(&packages).await.expect_err("tampered deb");
    let message = error.to_string();
    assert!(
        matches!(error, DebianError::Mismatch { .. })
            && message.contains(&shell.filename)
            && message.contains("signed Packages index"),
        "{message}"
    );
    assert!(
        !cache
            .path()
            .join(format!("debs/{}.deb", shell.sha256))
            .exists()
    );
}

#[tokio::test]
async fn an_in_release_not_signed_by_a_trusted_key_is_refused() {
    let archive = DebianMirror::build();
    let server = archive.serve();
    let in_release = format!("{}/dists/{SUITE}/InRelease", server.url);
    let cache = tempfile::tempdir().expect("temp dir");

    // Debian's keys did not sign the test archive.
    let mirror = Mirror::new(
        http(),
        Url::parse(&server.url).expect("URL"),
        SUITE,
        Keyring::debian(),
        cache.path().to_owned(),
    );
    let error = mirror
        .packages("amd64")
        .await
        .expect_err("not Debian's key");
    let message = error.to_string();
    assert!(
        matches!(error, DebianError::BadSignature { .. })
            && message.contains(&in_release)
            && message.contains("debian_keyring"),
        "{message}"
    );

    let mirror = local_mirror(&server.url, &archive, cache.path().to_owned());
    archive.resign_with_unknown_key();
    let error = mirror.packages("amd64").await.expect_err("unknown key");
    assert!(
        matches!(&error, DebianError::BadSignature { url, .. } if url == &in_release),
        "{error}"
    );

    let archive = DebianMirror::build();
    let server = archive.serve();
    let mirror = local_mirror(&server.url, &archive, cache.path().to_owned());
    mirror.packages("amd64").await.expect("signed as built");
    archive.edit_in_release();
    let error = mirror.packages("amd64").await.expect_err("edited");
    assert!(matches!(error, DebianError::BadSignature { .. }), "{error}");
}

#[tokio::test]
async fn an_expired_release_and_a_wrong_suite_are_refused() {
    let archive = DebianMirror::build();
    archive.set_valid_until("Wed, 01 Jan 2020 00:00:00 UTC");
    let server = archive.serve();
    let cache = tempfile::tempdir().expect("temp dir");
    let mirror = local_mirror(&server.url, &archive, cache.path().to_owned());
    let error = mirror.packages("amd64").await.expect_err("expired");
    assert!(
        matches!(error, DebianError::Expired { .. }) && error.to_string().contains("InRelease"),
        "{error}"
    );
    archive.set_valid_until("Fri, 01 Jan 2100 00:00:00 UTC");
    mirror.packages("amd64").await.expect("valid until 2100");

    // The archive serves suite `kiln` under another name: a replayed Release.
    std::fs::rename(
        archive.dir.join(format!("dists/{SUITE}")),
        archive.dir.join("dists/bookworm"),
    )
    .expect("rename suite");
    let keyring = Keyring::load(&archive.keyring).expect("key");
    let url = Url::parse(&server.url).expect("URL");
    let mirror = Mirror::new(http(), url, "bookworm", keyring, cache.path().to_owned());
    let error = mirror.packages("amd64").await.expect_err("wrong suite");
    assert!(matches!(error, DebianError::WrongSuite { .. }), "{error}");
}

#[tokio::test]
async fn missing_packages_and_unreachable_mirrors_are_named() {
    let archive = DebianMirror::build();
    let server = archive.serve();
    let cache = tempfile::tempdir().expect("temp dir");
    let mirror = local_mirror(&server.url, &archive, cache.path().to_owned());
    let index = mirror.packages("arm64").await.expect("index");
    let message = closure(&index, &["kiln-broken"])
        .expect_err("kiln-nowhere is missing")
        .to_string();
    assert!(
        message.contains(
            "package kiln-nowhere (needed by kiln-broken) is not in Debian kiln for arm64"
        ),
        "{message}"
    );
    let message = closure(&index, &["kiln-tool", "libgl1"])
        .expect_err("not in the archive")
        .to_string();
    assert!(
        message.starts_with("package libgl1 is not in Debian kiln for arm64"),
        "{message}"
    );
    let error = mirror
        .packages("riscv64")
        .await
        .expect_err("no such architecture");
    assert!(
        matches!(error, DebianError::NotInRelease { .. })
            && error
                .to_string()
                .contains("main/binary-riscv64/Packages.xz"),
        "{error}"
    );

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let url = format!("http://{address}/debian");
    let mirror = local_mirror(&url, &archive, cache.path().to_owned());
    let error = mirror.packages("amd64").await.expect_err("unreachable");
    let message = error.to_string();
    assert!(
        matches!(error, DebianError::Unreachable { .. })
            && message.contains(&format!("{url}/dists/kiln/InRelease"))
            && message.contains("debian_mirror"),
        "{message}"
    );
}

/// Debian's mirror, bookworm, with the keys embedded in kiln: the conda base's packages for
/// both architectures resolve and download.
#[tokio::test]
async fn debian_bookworm_from_deb_debian_org() {
    const CONDA_BASE: [&str; 10] = [
        "base-files",
        "base-passwd",
        "dash",
        "usr-is-merged",
        "libc6",
        "bash",
        "coreutils",
        "procps",
        "ca-certificates",
        "tzdata",
    ];
    let cache = tempfile::tempdir().expect("temp dir");
    let mirror = Mirror::new(
        http(),
        Url::parse("http://deb.debian.org/debian").expect("URL"),
        "bookworm",
        Keyring::debian(),
        cache.path().to_owned(),
    );
    let started = Instant::now();
    let release = mirror
        .release()
        .await
        .expect("bookworm's InRelease verifies");
    assert_eq!(release.codename, "bookworm");
    println!("InRelease fetched and verified in {:?}", started.elapsed());
    for arch in ["amd64", "arm64"] {
        let started = Instant::now();
        let index = mirror
            .packages_in(&release, arch)
            .await
            .expect("the index verifies");
        println!(
            "{arch}: index of {} packages fetched, verified and parsed in {:?}",
            index.len(),
            started.elapsed()
        );
        assert!(index.len() > 50_000, "{}", index.len());
        let conda = closure(&index, &CONDA_BASE).expect("the conda base resolves");
        let conda_names = names(&conda);
        for wanted in [
            "libc6",
            "bash",
            "coreutils",
            "procps",
            "ca-certificates",
            "dash",
            "tzdata",
        ] {
            assert!(conda_names.contains(&wanted), "{wanted} in {conda_names:?}");
        }
        // `usrmerge | usr-is-merged` keeps the root usr-is-merged, so no perl.
        for unwanted in ["usrmerge", "perl"] {
            assert!(
                !conda_names.contains(&unwanted),
                "{unwanted} in {conda_names:?}"
            );
        }
        let mut python_roots = CONDA_BASE.to_vec();
        python_roots.extend(["python3", "python3-pip"]);
        let python = closure(&index, &python_roots).expect("the python base resolves");
        assert!(
            names(&python).contains(&"python3.11"),
            "{:?}",
            names(&python)
        );
        println!(
            "{arch}: conda base {} packages ({:.1} MB of .deb), python base {} packages ({:.1} MB)",
            conda.len(),
            conda.iter().map(|s| s.size).sum::<u64>() as f64 / 1e6,
            python.len(),
            python.iter().map(|s| s.size).sum::<u64>() as f64 / 1e6,
        );
        let started = Instant::now();
        let debs = mirror
            .debs(&conda)
            .await
            .expect("the debs download and verify");
        println!(
            "{arch}: {} debs downloaded and verified in {:?}",
            debs.len(),
            started.elapsed()
        );
        for (deb, stanza) in debs.iter().zip(&conda) {
            assert_eq!(std::fs::metadata(deb).expect("deb").len(), stanza.size);
        }
    }
}
