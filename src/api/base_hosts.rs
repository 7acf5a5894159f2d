//! Where a user's recipe may pull its base images from. buildah pulls `FROM` and `From:` images
//! on the build host, outside any build sandbox, so before kiln takes a recipe it resolves each
//! image's registry host and refuses hosts on this machine (loopback), on the link-local network
//! (where cloud metadata services answer, 169.254.169.254) or in `build.blocked_networks`.
//! kiln's own registry and the hosts in `insecure_registries` are the operator's choice and are
//! always allowed.
//!
//! Names are resolved with the system resolver (tokio's lookup runs it on the blocking pool),
//! within `api.resolve_timeout_secs`; a name that does not resolve is refused too, since the
//! build could not pull from it either. Depends on `config` and `spec`.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::Config;
use crate::spec::registry_of;

/// Docker Hub's registry host, which `docker.io` names (and names without a host) are pulled
/// from.
const DOCKER_HUB: &str = "registry-1.docker.io";

/// The port looked up when a registry names none (HTTPS).
const DEFAULT_PORT: u16 = 443;

/// Most distinct registries one recipe may pull from: each is a lookup of up to
/// `api.resolve_timeout_secs` (they run at once).
pub const MAX_REGISTRIES: usize = 8;

/// An image a recipe pulls, and where the recipe names it, for messages ("at line 3").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// The reference as the recipe gives it.
    pub reference: String,
    /// Where it is named: "at line 3", "in `From:`".
    pub place: String,
}

/// Why a base image's registry is refused. Each message names the image, the host and the way
/// out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaseHostError {
    #[error(
        "the base image `{image}` {place} is on {host}, which {why}; kiln does not pull from \
         there. Use an image from a registry on the internet, or ask the operator to list \
         {host} in `insecure_registries`"
    )]
    Refused {
        image: String,
        place: String,
        host: String,
        why: String,
    },
    #[error(
        "the base image `{image}` {place} is on {host}, which does not resolve ({detail}); \
         check the name"
    )]
    Unresolved {
        image: String,
        place: String,
        host: String,
        detail: String,
    },
    #[error(
        "the base image `{image}` {place} is on {host}, whose lookup took more than {secs} s; \
         try again later"
    )]
    Slow {
        image: String,
        place: String,
        host: String,
        secs: u64,
    },
    #[error("the recipe pulls images from {count} registries; kiln takes up to {MAX_REGISTRIES}")]
    TooManyRegistries { count: usize },
    #[error(
        "`{host}` in the base image `{image}` {place} is not a registry host (`name[:port]` or \
         `[IPv6 address][:port]`)"
    )]
    Malformed {
        image: String,
        place: String,
        host: String,
    },
}

/// Checks the registry host of every image in `images`, each distinct one once, all at once;
/// the first refused image, in the recipe's order, is the error.
pub async fn check_base_images(config: &Config, images: &[BaseImage]) -> Result<(), BaseHostError> {
    let mut seen = std::collections::HashSet::new();
    let distinct: Vec<&BaseImage> = images
        .iter()
        .filter(|image| !image.reference.eq_ignore_ascii_case("scratch"))
        .filter(|image| seen.insert(registry_of(&image.reference)))
        .collect();
    if distinct.len() > MAX_REGISTRIES {
        return Err(BaseHostError::TooManyRegistries {
            count: distinct.len(),
        });
    }
    let checked =
        futures_util::future::join_all(distinct.into_iter().map(|image| check_one(config, image)))
            .await;
    checked.into_iter().collect()
}

async fn check_one(config: &Config, image: &BaseImage) -> Result<(), BaseHostError> {
    let registry = registry_of(&image.reference);
    let listed = |entry: &String| is_listed(entry, registry);
    if registry == config.registry.as_str() || config.insecure_registries.iter().any(listed) {
        return Ok(());
    }
    let fields = || {
        (
            image.reference.clone(),
            image.place.clone(),
            registry.to_owned(),
        )
    };
    let Some((host, port)) = split_host(registry) else {
        let (image, place, host) = fields();
        return Err(BaseHostError::Malformed { image, place, host });
    };
    let lookup = match host {
        "docker.io" | "index.docker.io" => DOCKER_HUB,
        other => other,
    };
    let (addresses, literal) = match lookup.parse::<IpAddr>() {
        Ok(ip) => (vec![ip], true),
        Err(_) => (resolve(config, lookup, port, image, registry).await?, false),
    };
    for ip in addresses {
        if let Some(kind) = refusal(ip, &config.build.blocked_networks) {
            let why = if literal {
                format!("is {ip}, {kind}")
            } else {
                format!("resolves to {ip}, {kind}")
            };
            let (image, place, host) = fields();
            return Err(BaseHostError::Refused {
                image,
                place,
                host,
                why,
            });
        }
    }
    Ok(())
}

/// The addresses `host` resolves to, with the system resolver, within the configured time.
async fn resolve(
    config: &Config,
    host: &str,
    port: u16,
    image: &BaseImage,
    registry: &str,
) -> Result<Vec<IpAddr>, BaseHostError> {
    let secs = config.api.resolve_timeout_secs;
    let looked_up = tokio::time::timeout(
        Duration::from_secs(secs),
        tokio::net::lookup_host((host, port)),
    )
    .await;
    let (image_ref, place, host_name) = (
        image.reference.clone(),
        image.place.clone(),
        registry.to_owned(),
    );
    match looked_up {
        Err(_) => Err(BaseHostError::Slow {
            image: image_ref,
            place,
            host: host_name,
            secs,
        }),
        Ok(Err(err)) => Err(BaseHostError::Unresolved {
            image: image_ref,
            place,
            host: host_name,
            detail: err.to_string(),
        }),
        Ok(Ok(addresses)) => {
            let addresses: Vec<IpAddr> = addresses.map(|address| address.ip()).collect();
            if addresses.is_empty() {
                return Err(BaseHostError::Unresolved {
                    image: image_ref,
                    place,
                    host: host_name,
                    detail: "it has no addresses".to_owned(),
                });
            }
            Ok(addresses)
        }
    }
}

/// Whether `entry` of `insecure_registries` names `registry`: the same `host:port`, or the
/// same host when the entry has no port.
fn is_listed(entry: &str, registry: &str) -> bool {
    if entry == registry {
        return true;
    }
    let has_port = match entry.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => entry.contains(':'),
    };
    let host = |text| split_host(text).map(|(host, _)| host);
    !has_port && host(entry).is_some() && host(entry) == host(registry)
}

/// `host[:port]` or `[v6][:port]` → (host without brackets, port).
fn split_host(registry: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => DEFAULT_PORT,
    };
    (!host.is_empty()).then_some((host, port))
}

/// Why an address may not be pulled from, as a phrase ("a loopback address"), or `None`.
fn refusal(ip: IpAddr, blocked: &[ipnet::IpNet]) -> Option<String> {
    let canonical = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    let link_local = match canonical {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    let this_network = match canonical {
        IpAddr::V4(v4) => v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_unspecified(),
    };
    if canonical.is_loopback() {
        Some("a loopback address (this machine)".to_owned())
    } else if link_local {
        Some("a link-local address (where cloud metadata services answer)".to_owned())
    } else if this_network {
        Some("an unspecified address, which reaches this machine".to_owned())
    } else {
        blocked
            .iter()
            .find(|network| network.contains(&ip) || network.contains(&canonical))
            .map(|network| format!("in the blocked network {network} (`build.blocked_networks`)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_from_ports() {
        assert_eq!(split_host("quay.io"), Some(("quay.io", 443)));
        assert_eq!(split_host("localhost:5000"), Some(("localhost", 5000)));
        assert_eq!(split_host("[::1]:5000"), Some(("::1", 5000)));
        assert_eq!(split_host("[fe80::1]"), Some(("fe80::1", 443)));
        assert_eq!(split_host("host:port"), None);
        assert_eq!(split_host("[::1]x"), None);
        assert_eq!(split_host(":80"), None);
    }

    #[test]
    fn private_addresses_are_refused() {
        let blocked: Vec<ipnet::IpNet> = vec!["10.20.0.0/16".parse().unwrap()];
        let why = |ip: &str| refusal(ip.parse().unwrap(), &blocked);
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(why(ip).unwrap().contains("loopback"), "{ip}");
        }
        for ip in ["169.254.169.254", "fe80::1", "::ffff:169.254.169.254"] {
            assert!(why(ip).unwrap().contains("link-local"), "{ip}");
        }
        for ip in ["0.0.0.0", "::"] {
            assert!(why(ip).unwrap().contains("unspecified"), "{ip}");
        }
        assert!(why("10.20.3.4").unwrap().contains("10.20.0.0/16"));
        for ip in ["10.21.0.1", "192.168.1.1", "151.101.1.1", "2a04:4e42::1"] {
            assert_eq!(why(ip), None, "{ip}");
        }
    }

    async fn checked(config: &Config, reference: &str) -> Result<(), BaseHostError> {
        let image = BaseImage {
            reference: reference.to_owned(),
            place: "at line 1".to_owned(),
        };
        check_base_images(config, &[image]).await
    }

    #[tokio::test]
    async fn kilns_own_and_listed_registries_are_allowed() {
        let mut config = Config {
            registry: "127.0.0.1:9090".parse().unwrap(),
            ..Config::default()
        };
        config.insecure_registries = vec!["localhost:5000".into(), "[::1]".into()];
        for allowed in [
            "127.0.0.1:9090/kiln/base/debian:bookworm",
            "localhost:5000/x",
            "[::1]/x",
            "[::1]:7000/x",
            "scratch",
        ] {
            assert_eq!(checked(&config, allowed).await, Ok(()), "{allowed}");
        }
        let err = checked(&config, "127.0.0.1:9091/x").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the base image `127.0.0.1:9091/x` at line 1 is on 127.0.0.1:9091, which is \
             127.0.0.1, a loopback address (this machine); kiln does not pull from there. Use \
             an image from a registry on the internet, or ask the operator to list \
             127.0.0.1:9091 in `insecure_registries`"
        );
        let err = checked(&config, "localhost/x").await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("which resolves to") && message.contains("loopback"),
            "{message}"
        );
        let err = checked(&config, "no-such-host.invalid/x")
            .await
            .unwrap_err();
        assert!(matches!(err, BaseHostError::Unresolved { .. }), "{err}");

        // `scratch` pulls nothing, and never hides a Docker Hub image behind it.
        let image = |reference: &str| BaseImage {
            reference: reference.to_owned(),
            place: "at line 1".to_owned(),
        };
        // Every address blocked: refused whether or not this machine resolves Docker Hub.
        let mut nowhere = config.clone();
        nowhere.build.blocked_networks =
            vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        let hub = check_base_images(&nowhere, &[image("scratch"), image("debian:12")]).await;
        assert!(hub.is_err_and(|err| err.to_string().contains("docker.io")));
        let many: Vec<BaseImage> = (1..=MAX_REGISTRIES + 1)
            .map(|n| image(&format!("127.0.0.1:{n}/x")))
            .collect();
        assert_eq!(
            check_base_images(&config, &many).await,
            Err(BaseHostError::TooManyRegistries { count: 9 })
        );
    }
}
