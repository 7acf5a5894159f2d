//! Repodata as builds read it: through rattler's gateway, from a mirror, at conda-forge's
//! size, and what a mirror that lacks a subdir's repodata does to a build.

use crate::support::{big_channel, conda_channel};

use std::collections::BTreeMap;
use std::path::Path;

use big_channel::{BIG_CHANNEL_NAME, BigChannel, Scale};
use conda_channel::{CHANNEL_NAME, CondaChannel, serve_dir};
use kiln::install::CondaInstaller;
use kiln::resolve::{CondaResolver, ResolveError, Target};
use kiln::spec::{Platform, Request, RequestInput};
use sha2::{Digest as _, Sha256};

fn request(channel: &str, entries: &[&str]) -> Request {
    Request::try_from(RequestInput {
        entries: entries.iter().map(|e| e.to_string()).collect(),
        channels: vec![channel.to_owned()],
        ..RequestInput::default()
    })
    .expect("valid request")
}

fn resolver(channel: &str, url: &str, cache: &Path) -> CondaResolver {
    let mirrors = BTreeMap::from([(channel.to_owned(), url.to_owned())]);
    CondaResolver::new(reqwest::Client::new(), cache.to_owned(), mirrors)
}

fn amd64() -> Target {
    Target {
        platform: Platform::LinuxAmd64,
        glibc: "2.36".into(),
    }
}

/// The gateway would take the missing `linux-64` as an empty subdir and the solver would then
/// say the package has no candidates; kiln names the URL that failed instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_without_a_subdirs_repodata_fails_naming_the_url() {
    let channel = CondaChannel::build();
    std::fs::remove_file(channel.dir.join("linux-64/repodata.json")).expect("remove");
    let server = channel.serve();
    let cache = tempfile::tempdir().expect("temp dir");
    let resolver = resolver(CHANNEL_NAME, &server.url, cache.path());
    for _ in 0..2 {
        // The second time the gateway answers from memory; the failure still shows.
        let err = resolver
            .solve(&request(CHANNEL_NAME, &["kiln-pyhello"]), &amd64())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ResolveError::ChannelStatus { status: 404, .. }),
            "{err}"
        );
        let url = format!("{}/linux-64/repodata.json", server.url);
        assert!(err.to_string().contains(&url), "{err} does not name {url}");
    }
}

/// At conda-forge's size (300,000 `linux-64` records, 100,000 `noarch`), the solve picks the
/// newest version satisfying each constraint among thousands, and the picks install (only
/// they have archives, with the sha256 their records give).
#[tokio::test(flavor = "multi_thread")]
async fn solves_against_a_channel_the_size_of_conda_forge() {
    let scale = Scale {
        aarch64: false,
        ..Scale::CONDA_FORGE
    };
    let channel = tokio::task::spawn_blocking(move || BigChannel::generate(scale))
        .await
        .expect("generator")
        .expect("generates the channel");
    let server = serve_dir(channel.dir.clone());
    let cache = tempfile::tempdir().expect("temp dir");
    let resolver = resolver(BIG_CHANNEL_NAME, &server.url, cache.path());
    let request = request(BIG_CHANNEL_NAME, &BigChannel::REQUEST);
    let solution = resolver.solve(&request, &amd64()).await.expect("solves");
    let picked: Vec<(&str, &str, &str)> = solution
        .packages
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str(), p.subdir.as_str()))
        .collect();
    let expected: Vec<(&str, &str, &str)> = channel
        .expected
        .iter()
        .map(|(name, version, kind)| {
            let subdir = if *kind == "noarch" {
                "noarch"
            } else {
                "linux-64"
            };
            (*name, version.as_str(), subdir)
        })
        .collect();
    assert_eq!(picked, expected);
    for package in &solution.packages {
        let path = format!("{}/{}", package.subdir, package.file_name());
        let bytes = std::fs::read(channel.dir.join(&path)).expect("the pick has an archive");
        assert_eq!(
            package.sha256,
            hex::encode(Sha256::digest(&bytes)),
            "{path}"
        );
        assert_eq!(
            package.url,
            format!("https://conda.anaconda.org/{BIG_CHANNEL_NAME}/{path}")
        );
    }

    // Again, from the gateway's memory: the same answer.
    let again = resolver.solve(&request, &amd64()).await.expect("solves");
    assert_eq!(again.packages, solution.packages);

    let staging = tempfile::tempdir().expect("temp dir");
    let pkgs = tempfile::tempdir().expect("temp dir");
    let installer = CondaInstaller::new(
        pkgs.path().to_owned(),
        reqwest::Client::new(),
        resolver.mirror_map().expect("mirror map"),
    );
    installer
        .install(&solution, Platform::LinuxAmd64, staging.path())
        .await
        .expect("installs");
    let version = std::fs::read_to_string(staging.path().join("share/kiln-core/VERSION"))
        .expect("kiln-core is installed");
    assert_eq!(version, format!("kiln-core {}\n", expected[1].1));
}
