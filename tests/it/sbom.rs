//! Every image's SBOM: a conda + pip image asked for through kiln's API gets, per platform, an
//! SPDX 2.3 document attached as an OCI referrer; `oras discover` lists it, `oras pull` gives
//! it back, the registry's referrers API filters by artifact type, and the build page links to
//! the same document. It names the conda packages, the wheels and the base's Debian packages
//! with their purls, sha256 and licenses. An image buildah built from a user's Dockerfile gets
//! one too, listing the Debian packages its own layers' dpkg status names.

use crate::support::{conda_channel, debian_base, go_tools};

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{PUSHER, TestApp};
use base64::Engine as _;
use conda_channel::{CHANNEL_NAME, CondaChannel};
use go_tools::tool;
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient};
use serde_json::{Value, json};

const BASE: &str = "kiln/base/debian";
const SPDX: &str = "application/spdx+json";
/// A cold native build of the test request, both platforms.
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// The operator token Dockerfiles are sent with.
const TOKEN: &str = "sbom-test-token";

/// kiln configured by `configure`, with the Debian base in its registry.
async fn start(configure: impl FnOnce(&mut kiln::config::Config)) -> TestApp {
    let app = TestApp::start_with(configure).await;
    let client = RegistryClient::new(
        &app.address.to_string(),
        Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1)),
        &[],
    )
    .expect("client");
    debian_base::push_debian_python_base(&client, BASE).await;
    app
}

/// Runs `command`, which must succeed, and returns its stdout.
fn run(command: &mut Command) -> String {
    let output = command.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The SPDX package named `name`.
fn package<'a>(sbom: &'a Value, name: &str) -> &'a Value {
    sbom["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|package| package["name"] == name)
        .unwrap_or_else(|| panic!("the SBOM lists {name}"))
}

fn purl(package: &Value) -> &str {
    package["externalRefs"][0]["referenceLocator"]
        .as_str()
        .expect("a purl")
}

fn sha256(package: &Value) -> &str {
    let checksum = &package["checksums"][0];
    assert_eq!(checksum["algorithm"], "SHA256", "{package}");
    let value = checksum["checksumValue"].as_str().expect("a checksum");
    assert!(
        value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()),
        "{value}"
    );
    value
}

#[tokio::test(flavor = "multi_thread")]
async fn native_images_carry_an_spdx_sbom_as_a_referrer() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    let channel_url = server.url.clone();
    let app = start(move |config| {
        let base = format!("{}/{BASE}:bookworm", config.registry);
        config.channels = vec![CHANNEL_NAME.parse().expect("channel")];
        config
            .channel_mirrors
            .insert(CHANNEL_NAME.to_owned(), channel_url);
        config.base.conda.image = Some(base.parse().expect("reference"));
        config.base.python.image = Some(base.parse().expect("reference"));
        config.base.python.python = None;
    })
    .await;
    let http = reqwest::Client::new();

    // conda and pip together, for both platforms.
    let answer: Value = http
        .post(app.url("/api/v1/images"))
        .json(&json!({
            "packages": ["kiln-hello", "python", "pip:idna==3.10"],
            "platforms": ["linux/amd64", "linux/arm64"],
        }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    let id = answer["build"]["id"].as_str().expect("a build").to_owned();
    let image = answer["image"].as_str().expect("image").to_owned();
    let build = until_done(&app, &id).await;
    assert_eq!(build["succeeded"], true, "{build}");
    let repository = repository_of(&image);

    // The build page links each platform's SBOM.
    let page = http
        .get(app.url(&format!("/view/builds/{id}")))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    let outputs = build["outputs"].as_array().expect("outputs").clone();
    assert_eq!(outputs.len(), 2, "{build}");
    let oras = Oras::new();
    for output in &outputs {
        let platform = output["platform"].as_str().expect("platform");
        let digest = output["digest"].as_str().expect("digest");
        let arch = platform.rsplit('/').next().expect("arch");
        let link = format!("/view/builds/{id}/sbom.spdx.json?platform={platform}");
        assert!(
            page.contains(&link.replace('/', "&#x2f;")) || page.contains(&link),
            "the page links {link}:\n{page}"
        );

        // The link serves the SPDX document.
        let response = http.get(app.url(&link)).send().await.expect("download");
        assert_eq!(response.status(), 200, "{link}");
        assert_eq!(response.headers()["content-type"], SPDX);
        let served = response.bytes().await.expect("body");
        let sbom: Value = serde_json::from_slice(&served).expect("the SBOM is JSON");
        assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
        assert_eq!(sbom["dataLicense"], "CC0-1.0");
        assert!(
            sbom["documentNamespace"]
                .as_str()
                .is_some_and(|ns| ns.contains(digest.trim_start_matches("sha256:"))),
            "{}",
            sbom["documentNamespace"]
        );
        let described = package(&sbom, &repository);
        assert_eq!(described["versionInfo"], digest);
        assert_eq!(described["primaryPackagePurpose"], "CONTAINER");

        let hello = package(&sbom, "kiln-hello");
        let subdir = if arch == "amd64" {
            "linux-64"
        } else {
            "linux-aarch64"
        };
        assert!(
            purl(hello).starts_with(&format!(
                "pkg:conda/kiln-hello@2.0?build=h0_0&channel={CHANNEL_NAME}&"
            )) && purl(hello).ends_with(&format!("&subdir={subdir}&type=conda")),
            "{}",
            purl(hello)
        );
        sha256(hello);
        assert_eq!(hello["licenseDeclared"], "Apache-2.0", "from the repodata");
        let python = package(&sbom, "python");
        assert!(purl(python).ends_with("&type=tar.bz2"), "{}", purl(python));
        let idna = package(&sbom, "idna");
        assert_eq!(purl(idna), "pkg:pypi/idna@3.10");
        sha256(idna);
        assert!(
            idna["downloadLocation"]
                .as_str()
                .is_some_and(|url| url.starts_with("https://") && url.ends_with(".whl"))
        );
        let libc = package(&sbom, "libc6");
        assert!(
            purl(libc).starts_with("pkg:deb/debian/libc6@2.36-")
                && purl(libc).ends_with(&format!("?arch={arch}&distro=bookworm")),
            "{}",
            purl(libc)
        );
        assert!(
            sbom["relationships"]
                .as_array()
                .expect("relationships")
                .iter()
                .any(|r| r["relationshipType"] == "CONTAINS"
                    && r["relatedSpdxElement"] == libc["SPDXID"]),
            "the image contains libc6"
        );

        // oras finds it through the referrers API, filtered by artifact type, and pulls the
        // very document the page serves.
        let subject = format!("{}/{repository}@{digest}", app.address);
        assert_eq!(
            oras.pull_sbom(&subject),
            served,
            "oras pull and the page give the same bytes"
        );

        // The registry's referrers API filters by artifact type.
        let other = http
            .get(app.url(&format!(
                "/v2/{repository}/referrers/{digest}?artifactType=application/vnd.example.other"
            )))
            .send()
            .await
            .expect("referrers");
        assert_eq!(other.headers()["oci-filters-applied"], "artifactType");
        let other: Value = other.json().await.expect("an index");
        assert_eq!(other["manifests"], json!([]), "no referrer of another type");
    }

    // A build with one image per platform needs the platform named.
    let response = http
        .get(app.url(&format!("/view/builds/{id}/sbom.spdx.json")))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), 400);
    let message: Value = response.json().await.expect("JSON error");
    assert!(
        message["message"]
            .as_str()
            .is_some_and(|m| m.contains("linux/amd64, linux/arm64")),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn images_built_from_a_dockerfile_carry_their_debian_packages() {
    let app = start(|config| config.api.tokens = vec![TOKEN.into()]).await;
    let http = reqwest::Client::new();
    // The step prints bash's version as dpkg in the image knows it, and registers a package
    // the base does not have: the SBOM must come from the built image's own layers.
    let dockerfile = format!(
        "FROM {}/{BASE}:bookworm\n\
         RUN dpkg-query -W -f 'BASH-VERSION ${{Version}}\\n' bash && \
         printf '\\nPackage: kiln-sbom-probe\\nStatus: install ok installed\\n\
         Version: 1.2-3\\nArchitecture: all\\n' >> /var/lib/dpkg/status\n",
        app.address
    );
    let answer: Value = http
        .post(app.url("/v1alpha2/container"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "containerFile": base64::engine::general_purpose::STANDARD.encode(&dockerfile),
            "containerPlatform": "linux/amd64",
        }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    let id = answer["buildId"]
        .as_str()
        .unwrap_or_else(|| panic!("a build: {answer}"));
    let build = until_done(&app, id).await;
    let log = http
        .get(app.url(&format!("/v1alpha1/builds/{id}/logs")))
        .send()
        .await
        .expect("log")
        .text()
        .await
        .expect("text");
    assert_eq!(build["succeeded"], true, "{build}\n{log}");
    let bash_version = log
        .lines()
        .find_map(|line| line.strip_prefix("BASH-VERSION "))
        .unwrap_or_else(|| panic!("the step printed bash's version:\n{log}"))
        .trim();

    let response = http
        .get(app.url(&format!("/view/builds/{id}/sbom.spdx.json")))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), 200, "{log}");
    let served = response.bytes().await.expect("body");
    let sbom: Value = serde_json::from_slice(&served).expect("the SBOM is JSON");
    let digest = build["outputs"][0]["digest"].as_str().expect("digest");
    let repository = repository_of(answer["targetImage"].as_str().expect("image"));
    assert_eq!(package(&sbom, &repository)["versionInfo"], digest);
    let bash = package(&sbom, "bash");
    assert_eq!(bash["versionInfo"], bash_version);
    assert_eq!(
        purl(bash),
        format!(
            "pkg:deb/debian/bash@{}?arch=amd64&distro=bookworm",
            bash_version.replace('+', "%2B")
        ),
        "the base's suite label carries over into the image"
    );
    assert_eq!(package(&sbom, "kiln-sbom-probe")["versionInfo"], "1.2-3");
    assert!(
        sbom["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .all(|package| !purl(package).starts_with("pkg:conda/")
                && !purl(package).starts_with("pkg:pypi/")),
        "kiln installed no conda or pip package here"
    );

    let subject = format!("{}/{repository}@{digest}", app.address);
    assert_eq!(Oras::new().pull_sbom(&subject), served);
}

/// Polls build `id` until it is done and returns it.
async fn until_done(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + BUILD_TIMEOUT;
    loop {
        let build: Value = reqwest::get(app.url(&format!("/api/v1/builds/{id}")))
            .await
            .expect("status")
            .json()
            .await
            .expect("JSON");
        if build["status"] == "DONE" {
            return build;
        }
        assert!(
            Instant::now() < deadline,
            "the build did not finish: {build}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `host/repository:tag` → `repository`.
fn repository_of(image: &str) -> String {
    image
        .split_once('/')
        .and_then(|(_, rest)| rest.rsplit_once(':'))
        .map(|(repository, _)| repository.to_owned())
        .expect("host/repository:tag")
}

/// oras with a configuration of its own.
struct Oras {
    config: tempfile::TempDir,
}

impl Oras {
    fn new() -> Oras {
        Oras {
            config: tempfile::tempdir().expect("oras config dir"),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(tool("oras"));
        command.env("DOCKER_CONFIG", self.config.path());
        command
    }

    /// Finds the one SPDX referrer of `subject` (`host/repository@digest`) with `oras
    /// discover`, filtered by artifact type, and returns the document `oras pull` gives.
    fn pull_sbom(&self, subject: &str) -> Vec<u8> {
        let discovered: Value = serde_json::from_str(&run(self.command().args([
            "discover",
            "--plain-http",
            "--distribution-spec",
            "v1.1-referrers-api",
            "--format",
            "json",
            "--artifact-type",
            SPDX,
            subject,
        ])))
        .expect("oras discover prints JSON");
        let referrers = discovered
            .get("referrers")
            .or_else(|| discovered.get("manifests"))
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("oras lists referrers: {discovered}"));
        assert_eq!(referrers.len(), 1, "{discovered}");
        assert_eq!(referrers[0]["artifactType"], SPDX);
        let referrer = referrers[0]["digest"].as_str().expect("digest");
        let (repository, _) = subject.split_once('@').expect("repository@digest");
        let pulled = tempfile::tempdir().expect("temp dir");
        run(self
            .command()
            .args(["pull", "--plain-http", "-o"])
            .arg(pulled.path())
            .arg(format!("{repository}@{referrer}")));
        std::fs::read(pulled.path().join("sbom.spdx.json")).expect("oras pulled it")
    }
}
