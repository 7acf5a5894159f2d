//! How many builds a client may start: a daily allowance per client — an anonymous client's
//! address, or a library user's name for remote builds — charged by the store in the
//! transaction that creates the build, so every API node counts against the same allowance and
//! only a build that is created costs (joining one that runs is free).

use std::net::IpAddr;
use std::time::Duration;

use axum::http::StatusCode;

use crate::api::error::ApiError;
use crate::config::Config;
use crate::store::Allowance;

/// The allowance of an anonymous client at `address` (all clients of unknown address share
/// one); `None` when `api.anonymous_builds_per_day` is 0 (any number).
pub fn anonymous(config: &Config, address: Option<IpAddr>) -> Option<Allowance> {
    let client = match address {
        Some(address) => format!("address:{address}"),
        None => "address:unknown".to_owned(),
    };
    allowance(client, config.api.anonymous_builds_per_day)
}

/// The remote-build allowance of library user `name`; `None` when `api.user_builds_per_day`
/// is 0 (any number).
pub fn user(config: &Config, name: &str) -> Option<Allowance> {
    allowance(format!("user:{name}"), config.api.user_builds_per_day)
}

fn allowance(client: String, per_day: u32) -> Option<Allowance> {
    (per_day > 0).then_some(Allowance { client, per_day })
}

/// The 429 for an anonymous address whose allowance is spent, with `Retry-After`.
pub fn address_spent(config: &Config, retry_after: Duration) -> ApiError {
    let mut refused = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "this address has started its {} builds for today; images that exist are still \
             served, new builds are allowed again in {} minutes (or send a token kiln is \
             configured with)",
            config.api.anonymous_builds_per_day,
            retry_after.as_secs().div_ceil(60)
        ),
    );
    refused.retry_after = Some(retry_after.as_secs().max(1));
    refused
}

/// The 429 for a library user whose remote-build allowance is spent, with `Retry-After`.
pub fn user_spent(config: &Config, name: &str, retry_after: Duration) -> ApiError {
    let minutes = retry_after.as_secs().div_ceil(60);
    let mut refused = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "{name} has started the {} remote builds a user may start per day; the next one is \
             possible in {} h {} min",
            config.api.user_builds_per_day,
            minutes / 60,
            minutes % 60
        ),
    );
    refused.retry_after = Some(retry_after.as_secs().max(1));
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_told_apart_and_zero_means_no_allowance() {
        let mut config = Config::default();
        config.api.anonymous_builds_per_day = 3;
        config.api.user_builds_per_day = 5;
        let a = anonymous(&config, Some(IpAddr::from([10, 0, 0, 1]))).unwrap();
        assert_eq!((a.client.as_str(), a.per_day), ("address:10.0.0.1", 3));
        assert_eq!(anonymous(&config, None).unwrap().client, "address:unknown");
        let u = user(&config, "alice").unwrap();
        assert_eq!((u.client.as_str(), u.per_day), ("user:alice", 5));
        config.api.anonymous_builds_per_day = 0;
        assert_eq!(anonymous(&config, None), None);
    }

    #[test]
    fn refusals_say_when_to_come_back() {
        let config = Config::default();
        let refused = address_spent(&config, Duration::from_secs(61));
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(61));
        assert!(
            refused.message.contains("again in 2 minutes"),
            "{}",
            refused.message
        );
        let refused = user_spent(&config, "alice", Duration::from_secs(3600 + 120));
        assert!(
            refused.message.contains("alice has started the"),
            "{}",
            refused.message
        );
        assert!(
            refused.message.contains("in 1 h 2 min"),
            "{}",
            refused.message
        );
    }
}
