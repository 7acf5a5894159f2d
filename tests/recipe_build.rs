//! The generated pip-only Dockerfile is real: buildah builds it on a Debian Python base made
//! with mmdebstrap, and the package it names imports at the pinned version.

use std::path::Path;
use std::process::Command;

use kiln::build::buildah::Buildah;
use kiln::config::{BuildSettings, Config};
use kiln::plan::ImagePlan;
use kiln::spec::{Platform, Request, RequestInput};

/// Made by tests/support/debian-python-base.sh when missing from buildah's local storage.
const BASE_IMAGE: &str = "localhost/kiln-test/debian-python:bookworm";

fn ensure_base_image() {
    let present = Command::new("buildah")
        .args(["inspect", "--type=image", BASE_IMAGE])
        .output()
        .expect("buildah is installed (the README's test command installs it)")
        .status
        .success();
    if !present {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/debian-python-base.sh");
        let status = Command::new(script)
            .arg(BASE_IMAGE)
            .status()
            .expect("the base image script runs");
        assert!(
            status.success(),
            "making the Debian Python base image failed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pip_only_dockerfile_builds_and_runs() {
    ensure_base_image();
    let mut config = Config::default();
    config.base.python.image = Some(BASE_IMAGE.parse().expect("valid reference"));
    // Sites behind a TLS-intercepting proxy (like this one) set build.ca_bundle.
    config.build = BuildSettings {
        ca_bundle: std::env::var_os("SSL_CERT_FILE")
            .map(Into::into)
            .or_else(|| Some("/etc/ssl/certs/ca-certificates.crt".into())),
        ..BuildSettings::default()
    };
    let request = Request::try_from(RequestInput {
        entries: vec!["pip:requests==2.32.3".into()],
        ..RequestInput::default()
    })
    .expect("valid request");
    let plan = ImagePlan::for_request(&request, &config.recipe_images(), &config.registry)
        .expect("recipes render")
        .remove(0);

    let context = tempfile::tempdir().expect("temp dir");
    let dockerfile = context.path().join("Dockerfile");
    std::fs::write(&dockerfile, &plan.recipes.dockerfile).expect("write Dockerfile");
    std::fs::write(context.path().join("conda.yml"), &plan.recipes.environment)
        .expect("write conda.yml");

    let buildah = Buildah::new(&config.build);
    let tag = format!("localhost/kiln-test/recipe:{}", plan.key.short());
    let mut log = String::new();
    let built = buildah
        .build(
            context.path(),
            &dockerfile,
            &tag,
            Platform::LinuxAmd64,
            |line| {
                log.push_str(line);
                log.push('\n');
            },
        )
        .await;
    assert!(built.is_ok(), "buildah bud failed: {built:?}\n{log}");

    let container = buildah.from_image(&tag).await.expect("working container");
    let printed = buildah
        .run_in(
            &container,
            &[
                "python3",
                "-c",
                "import requests; print(requests.__version__)",
            ],
        )
        .await;
    let bundle_checksum = ["sha256sum", "/etc/ssl/certs/ca-certificates.crt"];
    let built_bundle = buildah.run_in(&container, &bundle_checksum).await;
    let base = buildah
        .from_image(BASE_IMAGE)
        .await
        .expect("base container");
    let base_bundle = buildah.run_in(&base, &bundle_checksum).await;
    for name in [&container, &base] {
        buildah
            .remove_container(name)
            .await
            .expect("remove container");
    }
    buildah.remove_image(&tag).await.expect("remove image");

    assert_eq!(printed.expect("python3 runs").trim(), "2.32.3");
    assert_eq!(
        built_bundle.expect("sha256sum runs"),
        base_bundle.expect("sha256sum runs"),
        "the site CA bundle was mounted for the build, not baked into the image"
    );
}
