//! What every API does with a planned image: answer at once when it exists, join the build that
//! is making it, or start one — within the caller's allowance, which the store charges as it
//! creates the build (so racing requests, on any node, pay once).

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::limit;
use crate::metrics::RequestResult;
use crate::store::{BuildRecord, BuildStatus, NewBuild, StoreError, Submitter};

/// Where an image stands after [`ensure_image`].
#[derive(Debug, Clone)]
pub enum ImageState {
    /// It is in the registry; the id of the build that made it, when kiln remembers one. A
    /// build kiln vouches for is done and succeeded.
    Ready { build_id: Option<String> },
    /// A build is making it (`created`: this request started it).
    Building {
        build: Box<BuildRecord>,
        created: bool,
    },
}

impl ImageState {
    /// The id of the build behind the image, if any.
    pub fn build_id(&self) -> Option<&str> {
        match self {
            ImageState::Ready { build_id } => build_id.as_deref(),
            ImageState::Building { build, .. } => Some(&build.id),
        }
    }
}

/// Makes sure the image of `new` exists or is being built: images checked before answer from
/// memory, then the registry is asked (a hit answers at once and is remembered), then an
/// unfinished build of the same key is joined, and only then is a build started, which an
/// anonymous caller pays for from its daily allowance (in the store's submit transaction:
/// joining is free, and of requests racing for one new image only the first pays).
pub async fn ensure_image(
    state: &AppState,
    caller: Caller,
    new: NewBuild,
) -> Result<ImageState, ApiError> {
    if let Some(known) = state
        .images
        .get(&state.image_store, new.key.as_str(), &new.image.to_string())
        .await
    {
        state.metrics.container_request(RequestResult::Hit);
        return Ok(ImageState::Ready {
            build_id: Some(known.build_id.clone()),
        });
    }
    let (repository, tag) = (new.image.repository(), new.image.tag());
    if let Some(build) = trusted_hit(state, &new, repository, tag).await? {
        state.metrics.container_request(RequestResult::Hit);
        return Ok(ImageState::Ready {
            build_id: Some(build.id),
        });
    }
    state.metrics.container_request(RequestResult::Miss);
    let latest = state.store.latest_for_key(new.key.as_str()).await?;
    let running = latest
        .as_ref()
        .is_some_and(|build| build.status != BuildStatus::Done);
    let submitter = caller.submitter(state).await?;
    if !running {
        check_queue_room(state, &caller, &submitter).await?;
    }
    let allowance = if caller.trusted {
        None
    } else {
        limit::anonymous(&state.config, caller.address)
    };
    // A build of the key starts (or runs): whatever was remembered of it no longer holds.
    state.images.forget(new.key.as_str()).await;
    let submitted = state
        .queue
        .submit_charged(new, &submitter, allowance.as_ref())
        .await
        .map_err(|err| match err {
            StoreError::AllowanceSpent { retry_after, .. } => {
                state.metrics.rate_limited();
                limit::address_spent(&state.config, retry_after)
            }
            other => other.into(),
        })?;
    Ok(ImageState::Building {
        build: Box::new(submitted.build),
        created: submitted.created,
    })
}

/// Waits up to `api.wait_for_build_ms` for a build `placed` says this request started: when it
/// ends well by then the image is ready, and is answered so. Anything else (a build joined,
/// still running, or failed) stays as it was, answered as before. The store tells of each
/// build that ends, on any node, so this waits without polling.
pub async fn wait_for_new_build(
    state: &AppState,
    placed: ImageState,
) -> Result<ImageState, ApiError> {
    let ImageState::Building {
        build,
        created: true,
    } = &placed
    else {
        return Ok(placed);
    };
    let wait = std::time::Duration::from_millis(state.config.api.wait_for_build_ms);
    match state.queue.wait_finished(&build.id, wait).await? {
        Some(done) if done.succeeded == Some(true) => Ok(ImageState::Ready {
            build_id: Some(done.id),
        }),
        _ => Ok(placed),
    }
}

/// How long a client refused for a full queue is told to wait: builds take minutes.
const QUEUE_FULL_RETRY_SECS: u64 = 60;

/// Refuses a new build with 503 when too many wait for a worker: overall, or from this
/// caller's address when the caller has no token (`build.max_queued`,
/// `build.max_queued_per_address`).
async fn check_queue_room(
    state: &AppState,
    caller: &Caller,
    submitter: &Submitter,
) -> Result<(), ApiError> {
    let settings = &state.config.build;
    let anonymous = !caller.trusted && submitter.token_hash.is_none();
    let (all, theirs) = state
        .store
        .queued_builds(submitter.address.as_deref())
        .await?;
    if settings.max_queued > 0 && all >= settings.max_queued {
        return Err(ApiError::busy(
            format!(
                "kiln has {all} builds waiting for a worker, as many as it queues; images that \
                 exist are still served, try this one again in a minute"
            ),
            QUEUE_FULL_RETRY_SECS,
        ));
    }
    if anonymous
        && settings.max_queued_per_address > 0
        && submitter.address.is_some()
        && theirs >= settings.max_queued_per_address
    {
        return Err(ApiError::busy(
            format!(
                "this address has {theirs} builds waiting for a worker, as many as kiln queues \
                 per client without a token; try again once they have started, or send a token"
            ),
            QUEUE_FULL_RETRY_SECS,
        ));
    }
    Ok(())
}

/// The build that made the image at `repository:tag`, when the tag exists and kiln vouches for
/// what it points at: its last build of `key` succeeded and pushed exactly that digest. A tag
/// written behind kiln's back (another digest, or no build of the key) is a miss: kiln builds
/// the image and overwrites the tag. A hit is remembered in [`AppState::images`], with the
/// repository's change count from before the look-up.
async fn trusted_hit(
    state: &AppState,
    new: &NewBuild,
    repository: &str,
    tag: &str,
) -> Result<Option<BuildRecord>, ApiError> {
    let changes = state.image_store.changes(repository);
    let digest = match state.image_store.tag_digest(repository, tag).await {
        Ok(Some(digest)) => digest,
        Ok(None) => return Ok(None),
        // An unreadable registry is a miss, as a missing tag: the build finds out for good.
        Err(err) => {
            tracing::warn!(
                image = %format!("{repository}:{tag}"),
                error = %crate::error_chain(&err),
                "looking up a tag failed; the image is built again"
            );
            return Ok(None);
        }
    };
    let build = state.store.latest_for_key(new.key.as_str()).await?;
    let trusted = build.filter(|build| {
        build.status == BuildStatus::Done
            && build.succeeded == Some(true)
            && build.digest.as_deref() == Some(digest.as_str())
    });
    if let Some(build) = &trusted {
        state
            .images
            .insert(
                new.key.as_str(),
                &new.image.to_string(),
                repository,
                changes,
                &build.id,
            )
            .await;
    } else {
        tracing::warn!(
            image = %format!("{repository}:{tag}"),
            %digest,
            "a tag kiln did not build is ignored; the image is built again"
        );
    }
    Ok(trusted)
}
