//! pip packages, built natively from real PyPI: wheels for linux/amd64 and linux/arm64 on
//! kiln's Debian Python base (arm64 run under qemu-user binfmt), beside conda packages from the
//! local test channel, reproducibly; the same distributions the generated Dockerfile installs;
//! and the reasons users read when a requirement cannot be met.

use crate::support::{conda_channel, debian_base, native_build, run_image};

use std::collections::BTreeSet;

use crate::support::TestApp;
use conda_channel::CondaChannel;
use debian_base::push_debian_python_base;
use kiln::build::buildah::Buildah;
use kiln::config::{BuildSettings, Config};
use kiln::plan::ImagePlan;
use kiln::spec::{Request, RequestInput};
use kiln::store::BuildOutcome;
use native_build::{BASE_REPOSITORY, build, builder, pusher};
use run_image::{bud, copy_to_local_storage, run_in_image};

const BOTH: [&str; 2] = ["linux/amd64", "linux/arm64"];

/// The request of the first tests: a pinned library and a console script with compiled wheels.
const REQUESTS_AND_BLACK: [&str; 2] = ["pip:requests==2.32.3", "pip:black==24.10.0"];

fn succeeded(outcome: BuildOutcome, log: &str) -> (Vec<kiln::store::ImageOutput>, String) {
    match outcome {
        BuildOutcome::Succeeded { outputs, lock, .. } => (outputs, lock.expect("a lock")),
        other => panic!("the build failed: {other:?}\n{log}"),
    }
}

fn failure(outcome: BuildOutcome) -> String {
    match outcome {
        BuildOutcome::Failed { reason } => reason,
        other => panic!("the build should have failed: {other:?}"),
    }
}

/// `python3 -m pip list --format freeze` of an image in local storage (or pulled by `run`).
fn freeze(printed: &str) -> BTreeSet<String> {
    printed
        .lines()
        .map(|line| line.trim().to_lowercase())
        .filter(|line| !line.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pip_packages_install_natively_on_both_platforms() {
    let app = TestApp::start().await;
    push_debian_python_base(&pusher(&app), BASE_REPOSITORY).await;
    let channel = CondaChannel::build();
    let server = channel.serve();
    let data_a = tempfile::tempdir().expect("temp dir");
    let backend_a = builder(&app, &server.url, data_a.path()).await;

    // requests and black, amd64 and arm64: the library imports at its pinned version and the
    // console script runs from PATH, with the image's interpreter in its shebang.
    let (outcome, image, log) = build(&backend_a, &app, &REQUESTS_AND_BLACK, &BOTH, "").await;
    println!("{log}");
    let (outputs, lock) = succeeded(outcome, &log);
    assert!(lock.contains("# pip wheels for linux/amd64\n"), "{lock}");
    assert!(lock.contains("# pip wheels for linux/arm64\n"), "{lock}");
    assert!(lock.contains("\nrequests==2.32.3 --hash=sha256:"), "{lock}");
    assert!(
        !lock.contains("@EXPLICIT"),
        "a pip-only image has no conda packages"
    );
    for platform in BOTH {
        let version = run_in_image(
            &image,
            platform,
            &[
                "python3",
                "-c",
                "import requests; print(requests.__version__)",
            ],
        );
        assert_eq!(version.trim(), "2.32.3", "{platform}");
        let black = run_in_image(&image, platform, &["black", "--version"]);
        assert!(black.starts_with("black, 24.10.0"), "{platform}: {black}");
        let shebang = run_in_image(&image, platform, &["head", "-n1", "/usr/local/bin/black"]);
        assert_eq!(shebang.trim(), "#!/usr/bin/python3", "{platform}");
    }

    // The same request from another data directory: the same manifests, byte for byte.
    let data_b = tempfile::tempdir().expect("temp dir");
    let backend_b = builder(&app, &server.url, data_b.path()).await;
    let (again, _, log_b) = build(&backend_b, &app, &REQUESTS_AND_BLACK, &BOTH, "-again").await;
    let (outputs_b, _) = succeeded(again, &log_b);
    assert_eq!(
        outputs, outputs_b,
        "same request, same wheels, same manifests"
    );

    // The generated pip-only Dockerfile, built with buildah on the same base, installs the
    // same distributions at the same versions.
    let native = freeze(&run_in_image(
        &image,
        "linux/amd64",
        &["python3", "-m", "pip", "list", "--format", "freeze"],
    ));
    let recipe = freeze(&dockerfile_pip_list(&app, &REQUESTS_AND_BLACK).await);
    assert_eq!(native, recipe, "native image vs the Dockerfile's image");
    assert!(native.contains("requests==2.32.3"), "{native:?}");

    // numpy's compiled wheel imports and computes on arm64.
    let (outcome, numpy_image, log) = build(
        &backend_a,
        &app,
        &["pip:numpy==2.1.3"],
        &["linux/arm64"],
        "",
    )
    .await;
    let (_, lock) = succeeded(outcome, &log);
    assert!(lock.contains("manylinux"), "a binary wheel: {lock}");
    assert!(lock.contains("aarch64"), "an arm64 wheel: {lock}");
    let computed = run_in_image(
        &numpy_image,
        "linux/arm64",
        &[
            "python3",
            "-c",
            "import numpy, platform; a = numpy.arange(12).reshape(3, 4); \
             print(numpy.__version__, platform.machine(), int(a.sum()), \
             round(float(numpy.linalg.det(numpy.eye(3) * 2)), 3))",
        ],
    );
    assert_eq!(computed.trim(), "2.1.3 aarch64 66 8.0");

    // conda and pip together: pip installs into the environment's Python, and what conda
    // installed (six) is not installed again.
    let (outcome, mixed_image, log) = build(
        &backend_a,
        &app,
        &["kiln-hello", "six", "pip:six", "pip:idna==3.10"],
        &["linux/amd64"],
        "",
    )
    .await;
    let (_, lock) = succeeded(outcome, &log);
    assert!(lock.contains("kiln-hello-2.0-h0_0.conda#"), "{lock}");
    assert!(lock.contains("\nidna==3.10 --hash=sha256:"), "{lock}");
    assert!(!lock.contains("\nsix=="), "conda's six is kept: {lock}");
    assert_eq!(
        run_in_image(&mixed_image, "linux/amd64", &["kiln-hello"]).trim(),
        "hello from kiln-hello 2.0 on x86_64"
    );
    let imported = run_in_image(
        &mixed_image,
        "linux/amd64",
        &[
            "python3",
            "-c",
            "import idna, six; print(idna.__file__, idna.__version__, six.INSTALLED_BY)",
        ],
    );
    assert_eq!(
        imported.trim(),
        "/opt/conda/lib/python3.12/site-packages/idna/__init__.py 3.10 conda"
    );

    // A release with no wheel, and requirements that contradict each other.
    let (outcome, _, _) = build(&backend_a, &app, &["pip:pyyaml==5.1"], &["linux/arm64"], "").await;
    let reason = failure(outcome);
    assert!(reason.contains("linux/arm64"), "{reason}");
    assert!(
        reason.contains("pyyaml==5.1 has no usable wheels"),
        "{reason}"
    );
    let (outcome, _, _) = build(
        &backend_a,
        &app,
        &["pip:requests==2.32.3", "pip:urllib3<1.21"],
        &["linux/amd64"],
        "",
    )
    .await;
    let reason = failure(outcome);
    assert!(reason.contains("linux/amd64"), "{reason}");
    assert!(
        reason.contains("requests==2.32.3 depends on urllib3"),
        "{reason}"
    );
}

/// Builds the generated pip-only Dockerfile of `entries` with buildah on the test base (with
/// the site's CA bundle mounted, as behind this machine's TLS-intercepting proxy) and returns
/// its `pip list --format freeze`.
async fn dockerfile_pip_list(app: &TestApp, entries: &[&str]) -> String {
    let base = format!("{}/{BASE_REPOSITORY}:bookworm", app.address);
    let mut config = Config {
        registry: app.address.to_string().parse().expect("host"),
        ..Config::default()
    };
    config.base.python.image = Some(base.parse().expect("reference"));
    // Sites behind a TLS-intercepting proxy (like this one) set build.ca_bundle.
    config.build = BuildSettings {
        ca_bundle: Some("/etc/ssl/certs/ca-certificates.crt".into()),
        ..BuildSettings::default()
    };
    let request = Request::try_from(RequestInput {
        entries: entries.iter().map(|e| e.to_string()).collect(),
        ..RequestInput::default()
    })
    .expect("valid request");
    let plan = ImagePlan::for_request(&request, &config.recipe_images(), &config.registry)
        .expect("recipes render")
        .remove(0);
    // The base into local storage under its registry name, so `FROM` needs no pull.
    copy_to_local_storage(&base, &base, None);
    let context = tempfile::tempdir().expect("temp dir");
    let dockerfile = context.path().join("Dockerfile");
    std::fs::write(&dockerfile, &plan.recipes.dockerfile).expect("write Dockerfile");
    let buildah = Buildah::new(&config.build);
    let tag = format!("localhost/kiln-test/pip-recipe:{}", plan.key.short());
    let (built, log) = bud(&buildah, context.path(), &dockerfile, &tag).await;
    assert!(built.is_ok(), "buildah bud failed: {built:?}\n{log}");
    let container = buildah.from_image(&tag).await.expect("working container");
    let listed = buildah
        .run_in(
            &container,
            &["python3", "-m", "pip", "list", "--format", "freeze"],
        )
        .await
        .expect("pip list");
    let bundle_checksum = ["sha256sum", "/etc/ssl/certs/ca-certificates.crt"];
    let built_bundle = buildah.run_in(&container, &bundle_checksum).await;
    let base_container = buildah.from_image(&base).await.expect("base container");
    let base_bundle = buildah.run_in(&base_container, &bundle_checksum).await;
    for name in [&container, &base_container] {
        buildah.remove_container(name).await.expect("rm");
    }
    buildah.remove_image(&tag).await.expect("rmi");
    buildah.remove_image(&base).await.expect("rmi base");
    assert_eq!(
        built_bundle.expect("sha256sum runs"),
        base_bundle.expect("sha256sum runs"),
        "the site CA bundle was mounted for the build, not baked into the image"
    );
    listed
}

/// A Python base that lives in another registry (as `python:3.12-slim` lives on Docker Hub) is
/// copied into kiln's registry by the first build that needs it, and only by that one.
#[tokio::test(flavor = "multi_thread")]
async fn a_python_base_from_another_registry_is_copied_in_once() {
    let upstream = TestApp::start().await;
    push_debian_python_base(&pusher(&upstream), "library/debian-python").await;
    let app = TestApp::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        registry: app.address.to_string().parse().expect("host"),
        data_dir: data.path().to_owned(),
        ..Config::default()
    };
    config.base.python.image = Some(
        format!("{}/library/debian-python:bookworm", upstream.address)
            .parse()
            .expect("reference"),
    );
    config.base.python.python = None;
    let backend = kiln::build::native::NativeBuilder::from_config(
        &config,
        pusher(&app),
        std::sync::Arc::new(
            kiln::store::SqliteStore::open(&data.path().join("kiln.db"))
                .await
                .expect("database"),
        ),
    )
    .expect("builder");

    let (outcome, image, log) = build(&backend, &app, &["pip:six==1.16.0"], &BOTH, "").await;
    succeeded(outcome, &log);
    let mirror = format!(
        "mirror/{}/library/debian-python:bookworm",
        upstream.address.to_string().replace(':', "-")
    );
    assert!(
        log.contains(&format!("into kiln's registry as {mirror}")),
        "{log}"
    );
    for platform in BOTH {
        let printed = run_in_image(
            &image,
            platform,
            &["python3", "-c", "import six; print(six.__version__)"],
        );
        assert_eq!(printed.trim(), "1.16.0", "{platform}");
    }
    let (again, _, log) = build(&backend, &app, &["pip:six==1.16.0"], &BOTH, "-again").await;
    succeeded(again, &log);
    assert!(!log.contains("into kiln's registry"), "{log}");
}
