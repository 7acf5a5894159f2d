//! Human-readable status pages for builds and container requests.
//!
//! Wave-compatible clients (Nextflow) print links to `/view/builds/{id}` and
//! `/view/containers/{id}` when something goes wrong, so these pages are where a user lands to
//! find out why. They are server-rendered HTML with no JavaScript: a page for an unfinished
//! build reloads itself with `<meta http-equiv="refresh">`, which works in every browser and
//! costs one store read per reload. Everything shown comes from the store; askama escapes it,
//! since logs and recipes are full of `<` and `&`.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::api::AppState;
use crate::store::{BuildRecord, BuildStatus, ContainerRequest, ImageOutput, LOG_PAGE, StoreError};

/// Shown in the footer and appended to the stylesheet URL, so a new release's CSS is never
/// shadowed by a cached old one.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Seconds between reloads of a page whose build is unfinished: quick enough to follow a build
/// live, slow enough that a forgotten tab costs nothing.
pub(crate) const REFRESH_SECONDS: u32 = 3;

/// The stylesheet is compiled in so a kiln binary needs no files beside it.
const STYLESHEET: &str = include_str!("../../../static/kiln.css");

/// The status pages and their stylesheet.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/view/builds/{id}", get(build_page))
        .route("/view/containers/{id}", get(container_page))
        .route("/static/kiln.css", get(stylesheet))
}

/// One build: its state, timings, outputs, recipe, environment, lock and full log.
async fn build_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let Some(record) = state.public_build(&id).await.map_err(store_failed)? else {
        return Err(not_found("build", &id));
    };
    // Read after the record: once the record says DONE, the log is complete. The page shows
    // the log's last page (where a failure shows), never the whole log, and links to it.
    let length = state
        .store
        .read_log(&id, u64::MAX)
        .await
        .map_err(store_failed)?
        .next_offset;
    let from = length.saturating_sub(LOG_PAGE as u64);
    let log = state
        .store
        .read_log(&id, from)
        .await
        .map_err(store_failed)?
        .text;
    let mut page_data = BuildPage::new(record, log, Utc::now());
    page_data.log_skipped = from;
    page_data.reason = page_data
        .reason
        .map(|reason| crate::api::redact::public_text(&state.config, &reason));
    Ok(page(StatusCode::OK, &page_data))
}

/// One container request and, if it needed one, the state of its build.
async fn container_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let Some(request) = state.requests.get(&id).await.map_err(store_failed)? else {
        return Err(not_found("container request", &id));
    };
    let build = match &request.build_id {
        Some(build_id) => state.store.build(build_id).await.map_err(store_failed)?,
        None => None,
    };
    let mut page_data = ContainerPage::new(request, build.as_ref());
    page_data.build_reason = page_data
        .build_reason
        .map(|reason| crate::api::redact::public_text(&state.config, &reason));
    Ok(page(StatusCode::OK, &page_data))
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            // The URL carries the version, so a day of caching never serves stale CSS.
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        STYLESHEET,
    )
}

/// Renders `template` as the response body; a template that fails to render (a bug, not a
/// user error) still answers with a plain-text 500, with the request id its cause is logged
/// under, rather than an empty page.
pub(crate) fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => {
            let (status, message) = crate::api::error::failure(&err);
            (
                status,
                format!("kiln could not render this page: {message}\n"),
            )
                .into_response()
        }
    }
}

/// A page saying what went wrong: a heading, a sentence and, if given, the detail.
pub(crate) fn error_page(
    status: StatusCode,
    heading: &str,
    message: &str,
    detail: Option<String>,
) -> Response {
    page(
        status,
        &ErrorPage {
            heading: heading.into(),
            message: message.into(),
            detail,
        },
    )
}

/// A 404 that says what was looked for, since users arrive here from links in error messages
/// and a bare "Not Found" would leave them guessing whether the link or kiln is wrong.
fn not_found(what: &str, id: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        &ErrorPage {
            heading: "Not found".into(),
            message: format!("kiln has no {what} with id {id:?}."),
            detail: None,
        },
    )
}

/// A 500 (507 for a full data disk) naming the request id the cause is logged under: the cause
/// names server files, which the public does not see.
fn store_failed(err: StoreError) -> Response {
    let (status, message) = crate::api::error::failure(&err);
    page(
        status,
        &ErrorPage {
            heading: "Store error".into(),
            message: "kiln could not read its store.".into(),
            detail: Some(message),
        },
    )
}

#[derive(Debug, Template)]
#[template(path = "error.html")]
struct ErrorPage {
    heading: String,
    message: String,
    detail: Option<String>,
}

/// A point in time as shown (UTC, to the second) and as machine-readable `datetime`.
#[derive(Debug)]
struct Stamp {
    text: String,
    iso: String,
}

impl From<DateTime<Utc>> for Stamp {
    fn from(at: DateTime<Utc>) -> Self {
        Stamp {
            text: at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            iso: at.to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    }
}

/// How a build's state is shown: the store's status word, the outcome once done, and the CSS
/// class that colours them.
#[derive(Debug)]
struct StatusText {
    status: &'static str,
    outcome: Option<&'static str>,
    class: &'static str,
}

impl StatusText {
    fn of(record: &BuildRecord) -> Self {
        let (outcome, class) = match (record.status, record.succeeded) {
            (BuildStatus::Pending, _) => (None, "pending"),
            (BuildStatus::Building, _) => (None, "building"),
            (BuildStatus::Done, Some(true)) => (Some("succeeded"), "succeeded"),
            (BuildStatus::Done, _) => (Some("failed"), "failed"),
        };
        StatusText {
            status: record.status.as_str(),
            outcome,
            class,
        }
    }
}

/// One per-platform output row, with the size already made readable.
#[derive(Debug)]
struct OutputRow {
    platform: String,
    digest: String,
    size: String,
    download_url: Option<String>,
    /// The SBOM download, for outputs of succeeded builds.
    sbom_url: Option<String>,
}

impl OutputRow {
    fn new(output: ImageOutput, build_id: &str, succeeded: bool) -> Self {
        OutputRow {
            sbom_url: succeeded
                .then(|| crate::api::web::sbom::sbom_path(build_id, &output.platform)),
            platform: output.platform,
            digest: output.digest,
            size: human_size(output.size),
            // Only web URLs become links: an `href` is where escaping alone does not stop a
            // `javascript:` URL.
            download_url: output
                .download_url
                .filter(|url| url.starts_with("https://") || url.starts_with("http://")),
        }
    }
}

#[derive(Debug, Template)]
#[template(path = "build.html")]
struct BuildPage {
    id: String,
    key: String,
    attempt: u32,
    done: bool,
    status: &'static str,
    outcome: Option<&'static str>,
    status_class: &'static str,
    reason: Option<String>,
    image: String,
    digest: Option<String>,
    format: String,
    platforms: String,
    created: Stamp,
    started: Option<Stamp>,
    finished: Option<Stamp>,
    duration: String,
    outputs: Vec<OutputRow>,
    recipe_title: &'static str,
    containerfile: String,
    environment: String,
    lock: Option<String>,
    log: String,
    /// Bytes at the start of the log the page leaves out (it shows the last page).
    log_skipped: u64,
}

impl BuildPage {
    /// `now` measures how long an unfinished build has been running.
    fn new(record: BuildRecord, log: String, now: DateTime<Utc>) -> Self {
        let status = StatusText::of(&record);
        let duration = match (record.started_at, record.finished_at) {
            (Some(started), Some(finished)) => format_duration(finished - started),
            (Some(started), None) => format!("{} so far", format_duration(now - started)),
            (None, Some(_)) => "never started".into(),
            (None, None) => format!(
                "waiting for a worker for {}",
                format_duration(now - record.created_at)
            ),
        };
        let format = record.format();
        let platforms = record
            .platforms()
            .iter()
            .map(|platform| platform.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let recipe_title = if format == crate::spec::Format::Sif {
            "Singularity definition"
        } else {
            "Dockerfile"
        };
        BuildPage {
            done: record.status == BuildStatus::Done,
            status: status.status,
            outcome: status.outcome,
            status_class: status.class,
            reason: record.reason,
            image: record.image.to_string(),
            digest: record.digest,
            format: format.to_string(),
            platforms,
            created: record.created_at.into(),
            started: record.started_at.map(Stamp::from),
            finished: record.finished_at.map(Stamp::from),
            duration,
            outputs: record
                .outputs
                .into_iter()
                .map(|output| OutputRow::new(output, &record.id, record.succeeded == Some(true)))
                .collect(),
            recipe_title,
            containerfile: record.containerfile,
            environment: record.environment,
            lock: record.lock,
            log,
            log_skipped: 0,
            id: record.id,
            key: record.key.to_string(),
            attempt: record.attempt,
        }
    }
}

#[derive(Debug, Template)]
#[template(path = "container.html")]
struct ContainerPage {
    id: String,
    target_image: String,
    container_image: String,
    format: String,
    cached: bool,
    freeze: bool,
    created: Stamp,
    build_id: Option<String>,
    /// `None` when there is no build, or its record is gone.
    build_status: Option<String>,
    build_status_class: &'static str,
    build_reason: Option<String>,
    /// Reload while the build runs, so the page shows when the image is ready.
    build_pending: bool,
}

impl ContainerPage {
    fn new(request: ContainerRequest, build: Option<&BuildRecord>) -> Self {
        let status = build.map(StatusText::of);
        ContainerPage {
            build_status: status.as_ref().map(|s| match s.outcome {
                Some(outcome) => format!("{} — {outcome}", s.status),
                None => s.status.to_owned(),
            }),
            build_status_class: status.as_ref().map_or("", |s| s.class),
            build_reason: build.and_then(|b| b.reason.clone()),
            build_pending: build.is_some_and(|b| b.status != BuildStatus::Done),
            id: request.id,
            target_image: request.target_image,
            container_image: request.container_image,
            format: request.format,
            cached: request.cached,
            freeze: request.freeze,
            created: request.created_at.into(),
            build_id: request.build_id,
        }
    }
}

/// Binary units, as registries and `docker images` count: "1.5 KiB", "812.0 MiB".
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "one decimal is shown; f64 is exact far beyond that"
    )]
    let mut size = bytes as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
}

/// "4.2 s", "3 min 05 s", "1 h 02 min 03 s"; negative spans (clock skew between
/// processes) show as zero rather than as nonsense.
fn format_duration(span: TimeDelta) -> String {
    let millis = span.num_milliseconds().max(0);
    let seconds = millis / 1000;
    if seconds < 60 {
        return format!("{seconds}.{} s", (millis % 1000) / 100);
    }
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours == 0 {
        format!("{minutes} min {seconds:02} s")
    } else {
        format!("{hours} h {minutes:02} min {seconds:02} s")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::api::App;
    use crate::build::queue::Queue;
    use crate::build::{Backend, BuildLog};
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::registry::RegistryState;
    use crate::store::{BuildOutcome, NewBuild, SqliteStore, Store};

    /// kiln's state over a fresh database in a temporary directory.
    struct Setup {
        state: AppState,
        _data: tempfile::TempDir,
    }

    impl Setup {
        async fn new() -> Self {
            let data = tempfile::tempdir().unwrap();
            let config = Config {
                data_dir: data.path().to_owned(),
                ..Config::default()
            };
            let store = SqliteStore::open(&config.database_path()).await.unwrap();
            Self::with_store(data, config, Arc::new(store)).await
        }

        /// The queue is never started: the tests move builds through their states by hand.
        async fn with_store(
            data: tempfile::TempDir,
            config: Config,
            store: Arc<dyn Store>,
        ) -> Self {
            let registry = RegistryState::new(config.registry_config()).await.unwrap();
            let queue = Queue::new(store.clone(), Arc::new(NoBackend), 1);
            let search = crate::search::PackageIndex::from_config(
                &config,
                crate::resolve::Repodata::new(
                    reqwest::Client::new(),
                    config.data_dir.join("cache/repodata"),
                    config.channel_mirrors.clone(),
                ),
            )
            .unwrap();
            let metrics = Arc::new(Metrics::default());
            Setup {
                state: AppState::new(App::new(config, store, registry, queue, search, metrics)),
                _data: data,
            }
        }

        fn store(&self) -> &dyn Store {
            self.state.store.as_ref()
        }

        /// Status, content type and body of `GET path`.
        async fn get(&self, path: &str) -> (StatusCode, String, String) {
            let response = routes()
                .with_state(self.state.clone())
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let content_type = response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_owned();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                content_type,
                String::from_utf8(body.to_vec()).unwrap(),
            )
        }
    }

    /// Never runs: the queue's workers are not started.
    struct NoBackend;

    #[async_trait]
    impl Backend for NoBackend {
        async fn try_run(
            &self,
            _: &BuildRecord,
            _: &BuildLog,
        ) -> Result<BuildOutcome, crate::build::BuildError> {
            Err(crate::build::BuildError::refused(
                "the views tests build nothing",
            ))
        }
    }

    fn new_build(format: &str) -> NewBuild {
        let request = crate::spec::Request::try_from(crate::spec::RequestInput {
            entries: vec!["numpy=2.1".into()],
            format: Some(format.into()),
            ..crate::spec::RequestInput::default()
        })
        .expect("a valid request");
        NewBuild {
            key: "0123456789abcdef".repeat(4).parse().expect("a key"),
            image: "kiln.example/library/numpy:2.1--0123456789abcdef"
                .parse()
                .expect("an image name"),
            job: crate::spec::BuildJob::Native(request),
            containerfile: "FROM scratch\nRUN test 1 < 2 && echo ok\n".into(),
            environment: "channels: [conda-forge]\ndependencies: [numpy=2.1]\n".into(),
        }
    }

    const REFRESH: &str = r#"<meta http-equiv="refresh" content="3">"#;

    #[tokio::test]
    async fn app_debug_shows_no_password_or_token() {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: data.path().to_owned(),
            ..Config::default()
        };
        config.api.tokens = vec!["api-token-5e8b".into()];
        config.build.push_password = Some("push-password-1d7f".into());
        config.embedded_registry.users = vec![crate::config::RegistryUser::new(
            "ops",
            "registry-password-c2a9",
            true,
        )];
        let store = SqliteStore::open(&config.database_path()).await.unwrap();
        let setup = Setup::with_store(data, config, Arc::new(store)).await;
        let printed = format!("{:?}", setup.state);
        for secret in [
            "api-token-5e8b",
            "push-password-1d7f",
            "registry-password-c2a9",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("\"ops\""), "{printed}");
    }

    #[tokio::test]
    async fn build_page_follows_a_build_and_escapes_everything() {
        let setup = Setup::new().await;
        let store = setup.store();
        let id = store.submit(new_build("sif")).await.unwrap().build.id;
        store
            .append_log(&id, "solving\n<script>alert('x')</script> & more\n")
            .await
            .unwrap();

        let (status, content_type, html) = setup.get(&format!("/view/builds/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(html.contains(REFRESH), "pending pages reload");
        assert!(html.contains("<strong>PENDING</strong>"), "{html}");
        assert!(html.contains("kiln.example/library/numpy:2.1--0123456789abcdef"));
        assert!(html.contains("Singularity definition"));
        assert!(
            html.contains("RUN test 1 &#60; 2 &#38;&#38; echo ok"),
            "{html}"
        );
        assert!(html.contains("dependencies: [numpy=2.1]"));
        assert!(
            html.contains("&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62; &#38; more"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "log text must be escaped");
        assert!(html.contains("waiting for a worker"));

        let claimed = store
            .claim_next(
                "w1",
                &crate::store::WorkerScope::any(),
                std::time::Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert_eq!(claimed.map(|build| build.id).as_ref(), Some(&id));
        let (_, _, html) = setup.get(&format!("/view/builds/{id}")).await;
        assert!(html.contains(REFRESH), "running pages reload");
        assert!(html.contains("<strong>BUILDING</strong>"));
        assert!(html.contains("so far"));

        store
            .finish(
                &id,
                BuildOutcome::Succeeded {
                    digest: format!("sha256:{}", "ab".repeat(32)),
                    outputs: vec![ImageOutput {
                        platform: "linux/amd64".into(),
                        digest: format!("sha256:{}", "cd".repeat(32)),
                        size: 1536,
                        download_url: Some("https://kiln.example/sif/numpy.sif?a=1&b=2".into()),
                    }],
                    lock: Some("@EXPLICIT\nhttps://conda.anaconda.org/numpy.conda\n".into()),
                },
            )
            .await
            .unwrap();
        let (status, _, html) = setup.get(&format!("/view/builds/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !html.contains("http-equiv=\"refresh\""),
            "done pages stay put"
        );
        assert!(html.contains("<strong>DONE</strong> — succeeded"), "{html}");
        assert!(html.contains(&"ab".repeat(32)));
        assert!(html.contains(&"cd".repeat(32)));
        assert!(html.contains("1.5 KiB"));
        assert!(
            html.contains(r#"<a href="https://kiln.example/sif/numpy.sif?a=1&#38;b=2">"#),
            "{html}"
        );
        assert!(html.contains("@EXPLICIT"));
        assert!(html.contains("&#60;script&#62;"), "the log is still shown");
    }

    #[tokio::test]
    async fn failed_builds_show_why() {
        let setup = Setup::new().await;
        let store = setup.store();
        let id = store.submit(new_build("docker")).await.unwrap().build.id;
        store
            .finish(
                &id,
                BuildOutcome::Failed {
                    reason: "nothing provides numpy <1 needed by <root>".into(),
                },
            )
            .await
            .unwrap();
        let (status, _, html) = setup.get(&format!("/view/builds/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("<strong>DONE</strong> — failed"), "{html}");
        assert!(html.contains("nothing provides numpy &#60;1 needed by &#60;root&#62;"));
        assert!(html.contains("<h2>Dockerfile</h2>"));
        assert!(html.contains("never started"));
        assert!(html.contains("No output yet."));
        assert!(!html.contains("http-equiv=\"refresh\""));
    }

    #[tokio::test]
    async fn unknown_ids_are_404_pages() {
        let setup = Setup::new().await;
        for (path, what) in [
            ("/view/builds/bd-0000000000000000_1", "build"),
            ("/view/containers/000000000000", "container request"),
        ] {
            let (status, content_type, html) = setup.get(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(content_type.starts_with("text/html"));
            assert!(
                html.contains(&format!("kiln has no {what} with id")),
                "{html}"
            );
        }
        let (_, _, html) = setup.get("/view/builds/%3Cb%3E").await;
        assert!(
            html.contains("no build with id &#34;&#60;b&#62;&#34;."),
            "ids from the URL are escaped too: {html}"
        );
    }

    fn container_request(id: &str, build_id: Option<String>) -> ContainerRequest {
        ContainerRequest {
            id: id.into(),
            build_id,
            target_image: "kiln.example/library/numpy:2.1--0123456789abcdef".into(),
            container_image: "kiln.example/library/numpy:2.1--0123456789abcdef".into(),
            format: "docker".into(),
            cached: false,
            freeze: true,
            created_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    #[tokio::test]
    async fn container_pages_link_to_their_build() {
        let setup = Setup::new().await;
        let store = setup.store();
        let build_id = store.submit(new_build("docker")).await.unwrap().build.id;
        store
            .add_request(&container_request("0123456789ab", Some(build_id.clone())))
            .await
            .unwrap();
        store
            .add_request(&container_request("ba9876543210", None))
            .await
            .unwrap();

        let (status, content_type, html) = setup.get("/view/containers/0123456789ab").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/html"));
        assert!(
            html.contains(&format!(r#"<a href="/view/builds/{build_id}">"#)),
            "{html}"
        );
        assert!(html.contains("<strong>PENDING</strong>"));
        assert!(html.contains(REFRESH), "reloads until the build is done");
        assert!(html.contains("kiln.example/library/numpy:2.1--0123456789abcdef"));
        assert!(html.contains("2027-01-15 08:00:00 UTC"), "{html}");

        let (status, _, html) = setup.get("/view/containers/ba9876543210").await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("No build needed"));
        assert!(!html.contains("/view/builds/"));
        assert!(!html.contains("http-equiv=\"refresh\""));
    }

    #[tokio::test]
    async fn stylesheet_is_served_as_css() {
        let setup = Setup::new().await;
        let (status, content_type, css) = setup.get("/static/kiln.css").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/css; charset=utf-8");
        assert!(css.contains("prefers-color-scheme: dark"));
        let (_, _, html) = setup.get("/view/containers/000000000000").await;
        assert!(html.contains(&format!(r#"href="/static/kiln.css?v={VERSION}""#)));
    }

    /// Overwrites kiln's open database, its write-ahead log and its index in place with bytes
    /// that are no database, as a failing disk would: from then on SQLite refuses every query
    /// on `path` with an error of its own.
    fn corrupt_database(path: &std::path::Path) {
        use std::io::Write as _;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let mut shm = path.as_os_str().to_owned();
        shm.push("-shm");
        for file in [path.to_owned(), wal.into(), shm.into()] {
            let Ok(length) = std::fs::metadata(&file).map(|m| m.len()) else {
                continue;
            };
            let garbage = vec![0xa5; usize::try_from(length).unwrap()];
            let mut open = std::fs::File::options().write(true).open(&file).unwrap();
            open.write_all(&garbage).unwrap();
        }
    }

    #[tokio::test]
    async fn store_errors_are_500_pages_with_a_request_id() {
        let setup = Setup::new().await;
        corrupt_database(&setup.state.config.database_path());
        for path in [
            "/view/builds/bd-0000000000000000_1",
            "/view/containers/0123456789ab",
        ] {
            let (status, content_type, html) = setup.get(path).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
            assert!(content_type.starts_with("text/html"));
            assert!(html.contains("internal error; request id "), "{html}");
            assert!(!html.contains("the database failed"), "{html}");
        }
    }

    #[test]
    fn sizes_read_like_registries_count() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(812 * 1024 * 1024), "812.0 MiB");
        assert_eq!(human_size(3 << 40), "3.0 TiB");
        assert_eq!(human_size(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(format_duration(TimeDelta::milliseconds(4_250)), "4.2 s");
        assert_eq!(format_duration(TimeDelta::seconds(185)), "3 min 05 s");
        assert_eq!(
            format_duration(TimeDelta::seconds(3_723)),
            "1 h 02 min 03 s"
        );
        assert_eq!(format_duration(TimeDelta::seconds(-5)), "0.0 s");
    }
}
