//! The page where people ask for a container: search conda and PyPI, collect packages as
//! chips, pick a format and platforms, and get an image.
//!
//! The page is server-rendered and works without JavaScript: the form posts to
//! `/ui/container`, which goes through the same checks and the same [`ensure_image`] as
//! `POST /api/v1/images` and redirects to the build's page. `static/kiln.js` enhances it
//! (search, chips, a live log over Server-Sent Events) using only the public JSON API, so the
//! page never does anything a script could not. The script is compiled in, like the
//! stylesheet, so a kiln binary needs no files beside it.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::rest::images::plan_image;
use crate::api::submit::ensure_image;
use crate::api::web::csrf::{self, FormToken};
use crate::api::web::views;
use crate::spec::RequestInput;

/// The page's script; see the module documentation.
const SCRIPT: &str = include_str!("../../../static/kiln.js");

/// The platforms the form offers, in the order shown.
const PLATFORMS: [&str; 2] = ["linux/amd64", "linux/arm64"];

/// The request page, its no-JavaScript submission, and its script.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui/container", post(submit_form))
        .route("/static/kiln.js", get(script))
}

/// What the form shows: empty on first visit, the user's own input (and what was wrong with
/// it) after a refused no-JavaScript submission, so nothing typed is lost.
#[derive(Debug, Template)]
#[template(path = "index.html")]
struct IndexPage {
    /// The entries, one a line, for the `<noscript>` textarea.
    packages: String,
    /// `docker` or `sif`.
    format: String,
    /// `(platform, checked)` for each offered platform.
    platforms: Vec<(&'static str, bool)>,
    /// The base image field, as typed (empty: kiln's default base).
    base: String,
    /// The conda channels requests from this page use, in priority order: kiln's configured
    /// ones (the API's own default, when a request names none, is conda-forge and bioconda).
    channels: Vec<String>,
    /// Why the last submission was refused.
    error: Option<String>,
    /// An image that already existed and has no build to show (no-JavaScript path only).
    ready_image: Option<String>,
    /// The form's CSRF token ([`csrf`]).
    form_token: String,
}

impl IndexPage {
    fn new(form: &FormInput, channels: Vec<String>, form_token: &FormToken) -> Self {
        IndexPage {
            form_token: form_token.field.clone(),
            channels,
            packages: form.entries.join("\n"),
            format: form.format.clone(),
            base: form.base.clone(),
            platforms: PLATFORMS
                .iter()
                .map(|&platform| {
                    let checked = if form.platforms.is_empty() {
                        platform == PLATFORMS[0]
                    } else {
                        form.platforms.iter().any(|p| p == platform)
                    };
                    (platform, checked)
                })
                .collect(),
            error: None,
            ready_image: None,
        }
    }
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let token = state.forms.issue(&headers);
    let page = IndexPage::new(&FormInput::default(), state.config.channel_names(), &token);
    token.attach(views::page(StatusCode::OK, &page))
}

/// The form as posted: the `packages` textarea (whitespace-separated entries) and any
/// `package` fields (one entry each, the chips), `format`, repeated `platform`, and the
/// optional `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FormInput {
    entries: Vec<String>,
    channels: Vec<String>,
    format: String,
    platforms: Vec<String>,
    base: String,
}

impl Default for FormInput {
    fn default() -> Self {
        FormInput {
            entries: Vec::new(),
            channels: Vec::new(),
            format: "docker".into(),
            platforms: Vec::new(),
            base: String::new(),
        }
    }
}

impl FormInput {
    /// Parses `application/x-www-form-urlencoded` by hand: repeated keys are the point here,
    /// and axum's `Form` (serde_urlencoded) cannot collect them into a list.
    fn parse(body: &[u8]) -> Self {
        let mut form = FormInput::default();
        for (key, value) in url::form_urlencoded::parse(body) {
            match key.as_ref() {
                "packages" => form
                    .entries
                    .extend(value.split_whitespace().map(str::to_owned)),
                "package" if !value.trim().is_empty() => {
                    form.entries.push(value.trim().to_owned());
                }
                "format" => value.trim().clone_into(&mut form.format),
                "platform" => form.platforms.push(value.trim().to_owned()),
                "channel" if !value.trim().is_empty() => {
                    form.channels.push(value.trim().to_owned());
                }
                "base" => value.trim().clone_into(&mut form.base),
                _ => {}
            }
        }
        form
    }
}

/// The form without JavaScript: the same checks and submission as `POST /api/v1/images`, then
/// a redirect to the build's page (303, so a reload does not post again). A refused request
/// re-renders the form with the message and the user's input.
async fn submit_form(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(refused) = state
        .forms
        .verify(&headers, csrf::field_of(&body).as_deref())
    {
        return refused.page();
    }
    let token = state.forms.issue(&headers);
    let form = FormInput::parse(&body);
    let channels = if form.channels.is_empty() {
        state.config.channel_names()
    } else {
        form.channels.clone()
    };
    let input = RequestInput {
        entries: form.entries.clone(),
        channels: channels.clone(),
        format: Some(form.format.clone()),
        platforms: form.platforms.clone(),
        // An empty field is no base: the default, and the same request as without the field.
        base: Some(form.base.clone()).filter(|base| !base.is_empty()),
    };
    let placed = match plan_image(&state, input) {
        Ok(plan) => ensure_image(&state, caller, plan.new_build())
            .await
            .map(|placed| (plan, placed)),
        Err(err) => Err(err),
    };
    match placed {
        Ok((plan, placed)) => match placed.build_id() {
            Some(build_id) => Redirect::to(&format!("/view/builds/{build_id}")).into_response(),
            None => {
                // An image kiln has no build record for (pushed by hand, or its record
                // expired): there is no build page, so say where the image is.
                let mut page = IndexPage::new(&form, channels.clone(), &token);
                page.ready_image = Some(plan.image.to_string());
                views::page(StatusCode::OK, &page)
            }
        },
        Err(err) => {
            let mut page = IndexPage::new(&form, channels.clone(), &token);
            page.error = Some(err.message);
            views::page(err.status, &page)
        }
    }
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            // The URL carries the version, so a day of caching never serves a stale script.
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        SCRIPT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_collect_repeated_fields_and_split_the_textarea() {
        let form = FormInput::parse(
            b"packages=samtools%3D1.21%0D%0Apip%3Arequests%3D%3D2.32.3++&package=kiln-test%3A%3Akiln-hello%3D2.0\
              &package=&format=sif&platform=linux%2Farm64&other=x&channel=bioconda\
              &base=+kiln%2Fbase%2Fgl%3Abookworm+",
        );
        assert_eq!(
            form,
            FormInput {
                entries: vec![
                    "samtools=1.21".into(),
                    "pip:requests==2.32.3".into(),
                    "kiln-test::kiln-hello=2.0".into(),
                ],
                channels: vec!["bioconda".into()],
                format: "sif".into(),
                platforms: vec!["linux/arm64".into()],
                base: "kiln/base/gl:bookworm".into(),
            }
        );
        assert_eq!(FormInput::parse(b""), FormInput::default());
    }

    #[test]
    fn the_form_keeps_what_was_typed() {
        let mut page = IndexPage::new(
            &FormInput {
                entries: vec!["numpy<2".into(), "pip:x".into()],
                channels: Vec::new(),
                format: "sif".into(),
                platforms: vec!["linux/arm64".into()],
                base: "kiln/base/gl:\"x".into(),
            },
            vec!["kiln-test".into()],
            &csrf::FormTokens::new(&crate::signing::SigningKey::random()).issue(&HeaderMap::new()),
        );
        page.error = Some("`packages`: <bad>".into());
        let html = page.render().unwrap();
        assert!(html.contains("numpy&#60;2\npip:x</textarea>"), "{html}");
        assert!(html.contains(r#"value="sif" checked"#), "{html}");
        assert!(html.contains(r#"value="linux/arm64" checked"#), "{html}");
        assert!(!html.contains(r#"value="linux/amd64" checked"#), "{html}");
        assert!(html.contains("`packages`: &#60;bad&#62;"), "{html}");
        assert!(
            html.contains(r#"name="base" type="text" value="kiln/base/gl:&#34;x""#),
            "{html}"
        );
        assert!(html.contains(r#"<input type="hidden" name="channel" value="kiln-test">"#));
        let fresh = IndexPage::new(
            &FormInput::default(),
            Vec::new(),
            &csrf::FormTokens::new(&crate::signing::SigningKey::random()).issue(&HeaderMap::new()),
        )
        .render()
        .unwrap();
        assert!(fresh.contains(r#"value="docker" checked"#), "{fresh}");
        assert!(fresh.contains(r#"value="linux/amd64" checked"#), "{fresh}");
        assert!(fresh.contains(r#"id="entry-error" class="error" role="alert" hidden"#));
    }
}
