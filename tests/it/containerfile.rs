//! Dockerfile builds as the queue runs them: a record holding a user's Dockerfile goes through
//! [`Dispatch`] to the containerfile builder, which builds it with buildah on kiln's Debian
//! base (pulled from kiln's own registry over plain HTTP) and pushes the image there.

use crate::support::{debian_base, run_image};

use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use kiln::build::buildah::Buildah;
use kiln::build::containerfile::{ContainerfileBuilder, ContainerfileSettings};
use kiln::build::{Backend, BuildLog, Dispatch};
use kiln::config::BuildSettings;
use kiln::credentials::Credentials;
use kiln::plan::dockerfile_build;
use kiln::registry::client::{Auth, RegistryClient};
use kiln::spec::{BuildJob, DefinitionJob, Platform, Request, RequestInput};
use kiln::store::{BuildOutcome, BuildRecord, NewBuild, SqliteStore, Store};

use crate::support::{PUSHER, TestApp};
use run_image::run_in_image;

const BASE_REPOSITORY: &str = "kiln/base/debian";

/// Stands in for the native backend: answers every build with a failure naming itself.
struct Named(&'static str);

#[async_trait]
impl Backend for Named {
    async fn try_run(
        &self,
        _build: &BuildRecord,
        _log: &BuildLog,
    ) -> Result<BuildOutcome, kiln::build::BuildError> {
        Err(kiln::build::BuildError::refused(format!(
            "ran on {}",
            self.0
        )))
    }
}

/// kiln with the Debian base in its registry, and a dispatcher whose containerfile builder
/// pushes there as the test pusher; its work dir lives in `work`.
async fn setup(work: &std::path::Path) -> (TestApp, Dispatch) {
    let app = TestApp::start().await;
    let auth = Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1));
    let client = RegistryClient::new(&app.address.to_string(), auth, &[]).expect("client");
    debian_base::push_debian_python_base(&client, BASE_REPOSITORY).await;
    let builder = ContainerfileBuilder::new(
        Buildah::new(&BuildSettings::default()),
        ContainerfileSettings {
            registry: app.address.to_string(),
            credentials: Credentials::new(PUSHER.0, PUSHER.1),
            insecure: false,
            work_dir: work.to_owned(),
        },
    )
    .expect("builder");
    let dispatch = Dispatch::new(
        Arc::new(Named("native")),
        Arc::new(builder),
        Arc::new(Named("definition")),
    );
    (app, dispatch)
}

/// Submits `dockerfile` for `image`, starts it and runs it through `backend`, as the queue
/// would; returns the outcome, the record and the log.
async fn build(
    backend: &dyn Backend,
    image: &str,
    dockerfile: &str,
) -> (BuildOutcome, BuildRecord, String) {
    let data = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&data.path().join("kiln.db"))
            .await
            .expect("store"),
    );
    let registry = "kiln.example.org".parse().expect("a host");
    let new = NewBuild {
        image: image.parse().expect("an image name"),
        ..dockerfile_build(&registry, dockerfile.to_owned(), Platform::LinuxAmd64)
    };
    store.submit(new).await.expect("submit");
    let record = claim(store.as_ref()).await;
    let log = BuildLog::new(store.clone(), record.id.clone());
    let outcome = backend.run(&record, &log).await;
    let text = store.read_log(&record.id, 0).await.expect("log").text;
    (outcome, record, text)
}

/// The digest `library/dockerfile:<tag>` names in `app`'s registry, if the tag exists.
async fn tagged_digest(app: &TestApp, tag: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .head(app.url(&format!("/v2/library/dockerfile/manifests/{tag}")))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .expect("the registry answers");
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    assert!(response.status().is_success(), "{}", response.status());
    let digest = response.headers().get("docker-content-digest")?;
    Some(digest.to_str().expect("ASCII").to_owned())
}

/// Removes the base the build pulled into buildah's local storage under this app's address,
/// which no later test run uses.
fn remove_pulled_base(app: &TestApp) {
    let base = format!("{}/{BASE_REPOSITORY}:bookworm", app.address);
    let _ = Command::new("buildah").args(["rmi", &base]).output();
}

/// Whether buildah's local storage still has `image`.
fn exists_locally(image: &str) -> bool {
    Command::new("buildah")
        .args(["inspect", "--type", "image", image])
        .output()
        .expect("buildah inspect")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dockerfile_builds_into_an_image_in_kilns_registry() {
    let work = tempfile::tempdir().expect("temp dir");
    let (app, dispatch) = setup(work.path()).await;
    let dockerfile = format!(
        "FROM {}/{BASE_REPOSITORY}:bookworm\nRUN echo built-by-kiln > /kiln.txt\n",
        app.address
    );
    let image = format!("{}/library/dockerfile:kiln-test-ok", app.address);
    let (outcome, record, log) = build(&dispatch, &image, &dockerfile).await;

    let BuildOutcome::Succeeded {
        digest,
        outputs,
        lock,
    } = outcome
    else {
        panic!("the build failed: {outcome:?}\nlog:\n{log}");
    };
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(lock, None);
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].platform, "linux/amd64");
    assert_eq!(outputs[0].digest, digest);
    assert!(outputs[0].size > 10_000_000, "{outputs:?}");
    assert_eq!(outputs[0].download_url, None);
    for expected in [
        "STEP 1/2: FROM",
        "STEP 2/2: RUN echo built-by-kiln > /kiln.txt",
        &format!("pushed {image}@{digest}"),
    ] {
        assert!(log.contains(expected), "no {expected:?} in the log:\n{log}");
    }

    let inspected = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .expect("skopeo runs");
    assert!(
        inspected.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    let inspected: serde_json::Value =
        serde_json::from_slice(&inspected.stdout).expect("skopeo prints JSON");
    assert_eq!(inspected["Digest"], digest.as_str());
    assert_eq!(inspected["Architecture"], "amd64");
    assert_eq!(
        run_in_image(&image, "linux/amd64", &["cat", "/kiln.txt"]),
        "built-by-kiln\n"
    );
    assert_eq!(
        tagged_digest(&app, "kiln-test-ok").await.as_deref(),
        Some(digest.as_str()),
        "the tag names the reported digest"
    );

    assert!(
        !exists_locally(&format!("localhost/kiln-containerfile:{}", record.id)),
        "the build's local image is removed"
    );
    assert!(
        !work.path().join(&record.id).exists(),
        "the build's work directory is removed"
    );
    remove_pulled_base(&app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_dockerfile_says_which_step_failed() {
    let work = tempfile::tempdir().expect("temp dir");
    let (app, dispatch) = setup(work.path()).await;
    let dockerfile = format!(
        "FROM {}/{BASE_REPOSITORY}:bookworm\nRUN echo about to fail && exit 3\n",
        app.address
    );
    let image = format!("{}/library/dockerfile:kiln-test-fails", app.address);
    let (outcome, record, log) = build(&dispatch, &image, &dockerfile).await;

    let BuildOutcome::Failed { reason } = outcome else {
        panic!("a failing RUN step built: {outcome:?}");
    };
    assert!(
        reason.starts_with("the Dockerfile failed at STEP 2/2: RUN echo about to fail && exit 3"),
        "{reason}"
    );
    for expected in ["about to fail", "exit status 3"] {
        assert!(reason.contains(expected), "no {expected:?} in {reason}");
    }
    assert!(log.contains("about to fail"), "{log}");
    assert!(!work.path().join(&record.id).exists());
    assert_eq!(
        tagged_digest(&app, "kiln-test-fails").await,
        None,
        "nothing was pushed"
    );
    remove_pulled_base(&app);
}

/// Takes the one build waiting in `store`, as a worker would.
async fn claim(store: &dyn Store) -> BuildRecord {
    store
        .claim_next(
            "test",
            &kiln::store::WorkerScope::any(),
            std::time::Duration::from_secs(3600),
        )
        .await
        .expect("claim")
        .expect("a build waits")
}

#[tokio::test]
async fn dispatch_routes_by_kind() {
    let dispatch = Dispatch::new(
        Arc::new(Named("native")),
        Arc::new(Named("containerfile")),
        Arc::new(Named("definition")),
    );
    let registry = "kiln.example.org".parse().expect("a host");
    let dockerfile = dockerfile_build(&registry, "FROM scratch\n".into(), Platform::LinuxArm64);
    let request = Request::try_from(RequestInput {
        entries: vec!["samtools".into()],
        ..RequestInput::default()
    })
    .expect("a request");
    let native = NewBuild {
        job: BuildJob::Native(request),
        ..dockerfile.clone()
    };
    let definition = NewBuild {
        job: BuildJob::Definition(DefinitionJob {
            platform: Platform::LinuxAmd64,
            user: "alice".into(),
            library_ref: "alice/tools/x".into(),
            tags: vec!["latest".into()],
            repository: "alice/tools/x".into(),
            context: None,
            working_dir: "/".into(),
        }),
        ..dockerfile.clone()
    };
    for (new, backend) in [
        (dockerfile, "containerfile"),
        (native, "native"),
        (definition, "definition"),
    ] {
        let data = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&data.path().join("kiln.db"))
                .await
                .expect("store"),
        );
        let kind = new.job.kind();
        store.submit(new).await.expect("submit");
        let record = claim(store.as_ref()).await;
        let log = BuildLog::new(store.clone(), record.id.clone());
        assert_eq!(
            dispatch.run(&record, &log).await,
            BuildOutcome::Failed {
                reason: format!("ran on {backend}")
            },
            "{kind}"
        );
    }
}
