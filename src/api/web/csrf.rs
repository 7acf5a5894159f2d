//! Tokens that tie a form post to a page kiln served (signed double-submit): a page with a form
//! sets a random cookie, `kiln_form`, and puts an HMAC of it, keyed with a key derived from
//! `secret_key`, in the form's hidden `form_token` field. A post counts only when the field is the
//! HMAC of the cookie it came with. Another site can make a browser post to kiln, but it can
//! neither read the cookie nor sign one it planted, and the cookie (`SameSite=Strict`) is not
//! sent with a post from another site at all.
//!
//! Every API node with the same `secret_key` accepts a form from a page another served (behind
//! a load balancer the post rarely reaches the node that served the page). Without one (role
//! `all`) the key is made at start: after a restart an open form is refused with a page asking
//! to reload it. JSON APIs are not affected: browsers cannot send them cross-site without CORS,
//! and their callers authenticate with Bearer tokens.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use hmac::{KeyInit as _, Mac as _};

use crate::api::accounts::new_secret;
use crate::signing::SigningKey;

/// The cookie holding a browser's random value.
const COOKIE: &str = "kiln_form";

/// The form field holding the signature of the cookie.
pub(crate) const FIELD: &str = "form_token";

/// Issues and checks form tokens with one key.
#[derive(Debug)]
pub(crate) struct FormTokens {
    key: SigningKey,
}

impl FormTokens {
    /// Form tokens signed with `key` (for this purpose alone).
    pub(crate) fn new(key: &SigningKey) -> Self {
        FormTokens {
            key: key.for_purpose("form-token"),
        }
    }

    /// The token for a page answering a request with `headers`: the browser's cookie signed,
    /// or a new cookie.
    pub(crate) fn issue(&self, headers: &HeaderMap) -> FormToken {
        match cookie(headers) {
            Some(value) => FormToken {
                field: self.sign(&value),
                set_cookie: None,
            },
            None => {
                let value = new_secret();
                FormToken {
                    field: self.sign(&value),
                    set_cookie: Some(value),
                }
            }
        }
    }

    /// Checks a posted form's `form_token` against the cookie it came with.
    pub(crate) fn verify(&self, headers: &HeaderMap, field: Option<&str>) -> Result<(), Refused> {
        let cookie = cookie(headers).ok_or(Refused::NoCookie)?;
        let field = field.ok_or(Refused::NoField)?;
        let signature = hex::decode(field).map_err(|_| Refused::Wrong)?;
        let mut mac = self.mac();
        mac.update(cookie.as_bytes());
        mac.verify_slice(&signature).map_err(|_| Refused::Wrong)
    }

    fn sign(&self, value: &str) -> String {
        let mut mac = self.mac();
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn mac(&self) -> hmac::Hmac<sha2::Sha256> {
        hmac::Hmac::<sha2::Sha256>::new_from_slice(self.key.as_bytes())
            .expect("HMAC takes keys of any length")
    }
}

/// A page's form token and, when the browser had no cookie yet, the cookie to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FormToken {
    /// The value of the hidden field.
    pub(crate) field: String,
    set_cookie: Option<String>,
}

impl FormToken {
    /// Sets the cookie on `response` if the browser had none.
    pub(crate) fn attach(&self, mut response: Response) -> Response {
        if let Some(value) = &self.set_cookie {
            let cookie = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
        }
        response
    }
}

/// The `form_token` field of an urlencoded body.
pub(crate) fn field_of(body: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(key, _)| key == FIELD)
        .map(|(_, value)| value.into_owned())
}

/// Why a form post was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error(
        "the form came without kiln's cookie: it was sent from another site, or your browser \
         blocks cookies for kiln. Open the page on kiln and send the form from there."
    )]
    NoCookie,
    #[error("the form has no form_token field: send it from kiln's page, which adds one.")]
    NoField,
    #[error(
        "the form's token does not match: the page is older than kiln's signing key (kiln \
         restarted without secret_key), or the form was sent from another site. Reload the \
         page and send the form again."
    )]
    Wrong,
}

impl Refused {
    /// A 403 page saying why.
    pub(crate) fn page(self) -> Response {
        crate::api::web::views::error_page(
            StatusCode::FORBIDDEN,
            "Form refused",
            "kiln refused this form to protect your account from other sites posting in your name.",
            Some(self.to_string()),
        )
    }
}

/// The browser's `kiln_form` cookie, if it looks like one kiln set (64 hex digits).
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={value}")).unwrap(),
        );
        headers
    }

    #[test]
    fn a_page_token_passes_only_with_its_cookie() {
        let key = SigningKey::random();
        let forms = FormTokens::new(&key);
        let first = forms.issue(&HeaderMap::new());
        let value = first.set_cookie.clone().expect("a new cookie");
        let headers = with_cookie(&value);
        assert_eq!(forms.verify(&headers, Some(&first.field)), Ok(()));
        // Another node with the same key takes it; one with another key does not.
        let other_node = FormTokens::new(&key);
        assert_eq!(other_node.verify(&headers, Some(&first.field)), Ok(()));
        let stranger = FormTokens::new(&SigningKey::random());
        assert_eq!(
            stranger.verify(&headers, Some(&first.field)),
            Err(Refused::Wrong)
        );
        let again = forms.issue(&headers);
        assert_eq!(again.set_cookie, None, "an existing cookie is kept");
        assert_eq!(again.field, first.field);

        let other = with_cookie(&new_secret());
        assert_eq!(
            forms.verify(&other, Some(&first.field)),
            Err(Refused::Wrong)
        );
        assert_eq!(forms.verify(&headers, Some("zz")), Err(Refused::Wrong));
        assert_eq!(forms.verify(&headers, None), Err(Refused::NoField));
        assert_eq!(
            forms.verify(&HeaderMap::new(), Some(&first.field)),
            Err(Refused::NoCookie)
        );
        assert_eq!(
            field_of(format!("user=a&{FIELD}=abc").as_bytes()).as_deref(),
            Some("abc")
        );
    }
}
