//! kiln's own JSON API, simpler than Wave's for scripts: ask for an image, read a build, and
//! follow a build's log as Server-Sent Events. Documented in `/openapi.json`.

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::AppState;
use crate::api::auth::{Caller, authenticate};
use crate::api::error::ApiError;
use crate::api::log_follow::BuildWatch;
use crate::api::submit::{ImageState, ensure_image, wait_for_new_build};
use crate::plan::ImagePlan;
use crate::spec::{Format, Request, RequestError, RequestInput};
use crate::store::{BuildRecord, BuildStatus, StoreError};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/images", post(request_image))
        .route("/api/v1/builds/{id}", get(build))
        .route("/api/v1/builds/{id}/log", get(log_stream))
        .route("/api/v1/builds/{id}/cancel", post(cancel))
}

/// An image request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImageRequest {
    /// Package entries: `samtools=1.21`, `bioconda::bcftools=1.21`, `pip:requests==2.32.3`.
    #[schema(example = json!(["samtools=1.21", "pip:requests==2.32.3"]))]
    packages: Vec<String>,
    /// Conda channels, highest priority first; kiln's configured channels when empty.
    #[serde(default)]
    channels: Vec<String>,
    /// `docker` (default) or `sif`.
    #[serde(default)]
    format: Option<String>,
    /// `linux/amd64` (default) and/or `linux/arm64`; a SIF holds one.
    #[serde(default)]
    platforms: Vec<String>,
    /// A base image in kiln's registry, under `kiln/base/` (made with `kiln base create`),
    /// instead of kiln's default base. It is part of the image's identity.
    #[serde(default)]
    #[schema(example = json!("kiln/base/gl:bookworm"))]
    base: Option<String>,
}

/// Where a requested image stands.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImageAnswer {
    /// The image to pull: `host/library/name:tag`, or `oras://…` for a SIF.
    image: String,
    /// True when the image already existed.
    cached: bool,
    /// The build that makes (or made) it, when kiln has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    build: Option<BuildSummary>,
}

/// A build, briefly.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BuildSummary {
    /// `bd-<16 hex>_<attempt>`.
    id: String,
    /// `PENDING`, `BUILDING` or `DONE`.
    status: String,
    /// Set once DONE.
    #[serde(skip_serializing_if = "Option::is_none")]
    succeeded: Option<bool>,
}

impl BuildSummary {
    /// Build `id`, done and succeeded: the build of an image kiln vouches for.
    fn succeeded(id: String) -> Self {
        BuildSummary {
            id,
            status: BuildStatus::Done.to_string(),
            succeeded: Some(true),
        }
    }
}

impl From<&BuildRecord> for BuildSummary {
    fn from(build: &BuildRecord) -> Self {
        BuildSummary {
            id: build.id.clone(),
            status: build.status.to_string(),
            succeeded: build.succeeded,
        }
    }
}

/// Ask for an image: answered at once when it exists, otherwise its build starts (or the
/// running one is joined). A build this request starts is waited for up to
/// `api.wait_for_build_ms`; done and succeeded by then, it is answered as done.
#[utoipa::path(
    post,
    path = "/api/v1/images",
    request_body = ImageRequest,
    responses(
        (status = 200, description = "The image and its build", body = ImageAnswer),
        (status = 400, description = "The request names the field at fault"),
        (status = 429, description = "The anonymous daily build allowance is used up"),
    )
)]
pub(crate) async fn request_image(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<ImageAnswer>, ApiError> {
    let asked: ImageRequest = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("the request body is not valid: {err}")))?;
    let plan = plan_image(
        &state,
        RequestInput {
            entries: asked.packages,
            channels: asked.channels,
            platforms: asked.platforms,
            format: asked.format,
            base: asked.base,
        },
    )?;
    let placed = ensure_image(&state, caller, plan.new_build()).await?;
    let cached = matches!(placed, ImageState::Ready { .. });
    // A build this request started and that ended well in time is answered as done.
    let placed = wait_for_new_build(&state, placed).await?;
    let build = match placed {
        ImageState::Ready { build_id } => build_id.map(BuildSummary::succeeded),
        ImageState::Building { build, .. } => Some(BuildSummary::from(build.as_ref())),
    };
    Ok(Json(ImageAnswer {
        image: plan.image.to_string(),
        cached,
        build,
    }))
}

/// Refuses a request naming more channels than `api.max_channels`; the message names `field`.
/// kiln's configured channels, used when a request names none, are the operator's and never
/// counted here.
pub(crate) fn check_channel_count(
    state: &AppState,
    channels: &[String],
    field: &str,
) -> Result<(), ApiError> {
    let limit = state.config.api.max_channels;
    if channels.len() > limit {
        return Err(ApiError::bad_request(format!(
            "{field}: the request names {} channels; kiln takes up to {limit}",
            channels.len()
        )));
    }
    Ok(())
}

/// Checks a request and plans its one image, with errors that name the field at fault. Shared
/// with the HTML form (`ui.rs`), so both front doors accept and reject exactly the same input.
pub(crate) fn plan_image(state: &AppState, mut input: RequestInput) -> Result<ImagePlan, ApiError> {
    check_channel_count(state, &input.channels, "`channels`")?;
    if input.channels.is_empty() {
        input.channels = state.config.channel_names();
    }
    let request = Request::try_from(input).map_err(|err| match err {
        RequestError::Base(_) => ApiError::bad_request(format!("`base`: {err}")),
        err => ApiError::bad_request(err.to_string()),
    })?;
    if request.format() == Format::Sif && request.platforms().len() != 1 {
        return Err(ApiError::bad_request(
            "`platforms`: a SIF holds one platform; ask for one",
        ));
    }
    let mut plans = ImagePlan::for_request(
        &request,
        &state.config.recipe_images(),
        &state.config.registry,
    )
    .map_err(|err| ApiError::bad_request(format!("`packages`: {err}")))?;
    // One platform set gives one plan; `for_request` splits only multi-platform SIFs, which
    // were refused above.
    if plans.is_empty() {
        return Err(ApiError::bad_request("`packages`: nothing to build"));
    }
    Ok(plans.remove(0))
}

/// The whole build record: request, recipes, status, timings, outputs, lock.
#[utoipa::path(
    get,
    path = "/api/v1/builds/{id}",
    params(("id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The build record (JSON)"),
        (status = 404, description = "No such build"),
    )
)]
pub(crate) async fn build(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BuildRecord>, ApiError> {
    state
        .public_build(&id)
        .await?
        .map(|mut build| {
            build.reason = build
                .reason
                .map(|reason| crate::api::redact::public_text(&state.config, &reason));
            Json(build)
        })
        .ok_or_else(|| ApiError::not_found(format!("build {id}")))
}

/// Cancel a build that is waiting or running: its submitter may (with the token it was
/// submitted with), and operators may cancel any build, Wave's too. It ends failed, with the
/// reason saying who cancelled it.
#[utoipa::path(
    post,
    path = "/api/v1/builds/{id}/cancel",
    params(("id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The cancelled build record (JSON)"),
        (status = 401, description = "No valid token came with the request"),
        (status = 403, description = "The token is neither the submitter's nor an operator's"),
        (status = 404, description = "No such build"),
        (status = 409, description = "The build is done already"),
    )
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Json<BuildRecord>, ApiError> {
    let unauthorized = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, message);
    let Some(user) = authenticate(&state, &headers).await? else {
        return Err(unauthorized(
            "cancelling a build needs a token: the one it was submitted with, or an \
             operator's (send `Authorization: Bearer <token>`); a token that is not valid \
             gets this answer too",
        ));
    };
    let token_hash = caller.token_hash;
    let Some(build) = state.store.build(&id).await? else {
        return Err(ApiError::not_found(format!("build {id}")));
    };
    let submitter = state.store.submitter(&id).await?.unwrap_or_default();
    let owner = submitter.token_hash.is_some() && submitter.token_hash == token_hash;
    if !user.operator && !owner {
        // A remote build is its user's alone: others do not learn that it exists.
        if build.job.kind() == crate::spec::BuildKind::Definition {
            return Err(ApiError::not_found(format!("build {id}")));
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "build {id} was not submitted with this token; only its submitter or an \
                 operator may cancel it"
            ),
        ));
    }
    if build.status == BuildStatus::Done {
        return Err(already_done(&id));
    }
    let reason = if owner {
        "cancelled by its submitter"
    } else {
        "cancelled by an operator"
    };
    match state.queue.cancel(&id, reason).await {
        Ok(cancelled) => Ok(Json(cancelled)),
        // It ended between the read above and the cancel.
        Err(StoreError::IllegalTransition { .. }) => Err(already_done(&id)),
        Err(err) => Err(err.into()),
    }
}

fn already_done(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!("build {id} is done already; only a waiting or running build can be cancelled"),
    )
}

/// The build log as Server-Sent Events: `log` events carry text as it is written, one `done`
/// event (`{"status","succeeded"}`) ends the stream.
#[utoipa::path(
    get,
    path = "/api/v1/builds/{id}/log",
    params(("id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "text/event-stream of `log` events, then `done`"),
        (status = 404, description = "No such build"),
    )
)]
pub(crate) async fn log_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if state.public_build(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("build {id}")));
    }
    Ok(Sse::new(follow(state, id)).keep_alive(KeepAlive::default()))
}

/// Reads the log from where the last read ended until the build is done and all is sent,
/// woken by the store's news of the build (written on any node).
fn follow(state: AppState, id: String) -> impl Stream<Item = Result<Event, Infallible>> {
    let watch = BuildWatch::new(state.store.as_ref(), &id);
    futures_util::stream::unfold(Some((0u64, watch)), move |following| {
        let state = state.clone();
        let id = id.clone();
        async move {
            let (mut offset, mut watch) = following?;
            loop {
                let Ok(Some(build)) = state.store.build(&id).await else {
                    return None;
                };
                let Ok(slice) = state.store.read_log(&id, offset).await else {
                    return None;
                };
                if !slice.text.is_empty() {
                    offset = slice.next_offset;
                    return Some((
                        Ok(Event::default().event("log").data(slice.text)),
                        Some((offset, watch)),
                    ));
                }
                if build.status == BuildStatus::Done {
                    let done = serde_json::json!({
                        "status": build.status.to_string(),
                        "succeeded": build.succeeded,
                        "reason": build
                            .reason
                            .map(|reason| crate::api::redact::public_text(&state.config, &reason)),
                    });
                    return Some((
                        Ok(Event::default().event("done").data(done.to_string())),
                        None,
                    ));
                }
                watch.changed().await;
            }
        }
    })
}
