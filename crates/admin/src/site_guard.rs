//! Refuses requests a browser makes on behalf of another site. The admin
//! listener runs on an operator's machine, often on loopback with
//! `insecure_no_auth`, where any web page the operator opens can reach it:
//! a page on another origin can send a `no-cors` POST, and a page whose name
//! it re-points at 127.0.0.1 (DNS rebinding) is, to the browser, same-origin.
//! Four checks close both, in every mode, token or not:
//!
//! - `Host` must be an address the listener answers on, `localhost`, or a
//!   name in `[admin] allowed_hosts` (a rebinding page's `Host` is its own
//!   name);
//! - an `Origin` must be the listener's own (`http(s)://` + `Host`);
//! - `Sec-Fetch-Site: cross-site` or `same-site` is refused;
//! - a request that changes anything must say `Content-Type:
//!   application/json`, which no form and no `no-cors` request can send
//!   without a CORS preflight, which this listener never grants.

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, HeaderMap, Method};

use crate::error::ApiError;

/// What the listener answers to.
#[derive(Clone, Debug)]
pub struct SiteGuard {
    listen: SocketAddr,
    /// Host names (lowercase, without port) also accepted in `Host`.
    allowed_hosts: Vec<String>,
}

impl SiteGuard {
    pub fn new(listen: SocketAddr, allowed_hosts: &[String]) -> Self {
        Self {
            listen,
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        }
    }

    /// `Ok` when the request may go on; else the refusal, which names the
    /// header and what to change.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = match headers.get(header::HOST) {
            // HTTP/1.0 clients may send none; every browser sends one.
            None => None,
            Some(value) => {
                let host = value.to_str().ok().map(str::trim).unwrap_or_default();
                if !self.host_allowed(host) {
                    return Err(ApiError::forbidden(
                        "host_not_allowed",
                        format!(
                            "Host {:?} is not an address of this admin listener; use {} or \
                             localhost, or add the name to [admin] allowed_hosts",
                            prism_media::remote_text::remote_text(host),
                            self.listen
                        ),
                    ));
                }
                Some(host)
            }
        };
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default().trim();
            let own = host.is_some_and(|host| {
                ["http://", "https://"].iter().any(|scheme| {
                    origin
                        .get(..scheme.len())
                        .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
                        && origin[scheme.len()..].eq_ignore_ascii_case(host)
                })
            });
            if !own {
                return Err(ApiError::forbidden(
                    "cross_origin",
                    format!(
                        "requests from another site are refused (Origin {:?})",
                        prism_media::remote_text::remote_text(origin)
                    ),
                ));
            }
        }
        if let Some(site) = headers.get("sec-fetch-site") {
            let site = site.to_str().unwrap_or_default();
            if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
                return Err(ApiError::forbidden(
                    "cross_origin",
                    "requests from another site are refused (Sec-Fetch-Site)",
                ));
            }
        }
        if !matches!(*method, Method::GET | Method::HEAD) && !is_json(headers) {
            return Err(ApiError::unsupported_media_type(
                "send Content-Type: application/json with every request that changes something",
            ));
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        if name == "localhost" || self.allowed_hosts.contains(&name) {
            return true;
        }
        match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            // An address literal cannot be re-pointed by DNS: it is the
            // listener's own address, or any address when it listens on all.
            Ok(ip) => ip == self.listen.ip() || self.listen.ip().is_unspecified(),
            Err(_) => false,
        }
    }
}

/// The host of a `Host` header, without its port (`[::1]:80` → `[::1]`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn loopback() -> SiteGuard {
        SiteGuard::new(
            "127.0.0.1:8080".parse().unwrap(),
            &["prism.example.org".into()],
        )
    }

    #[test]
    fn hosts_of_the_listener_pass_and_other_names_do_not() {
        let guard = loopback();
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:8080",
            "LOCALHOST",
            "prism.example.org:8080",
        ] {
            assert!(
                guard
                    .check(&Method::GET, &headers(&[("host", host)]))
                    .is_ok(),
                "{host}"
            );
        }
        for host in [
            "attacker.example:8080",
            "127.0.0.2:8080",
            "[::1]:8080",
            "",
            "localhost.attacker.example",
        ] {
            let refused = guard
                .check(&Method::GET, &headers(&[("host", host)]))
                .unwrap_err();
            assert_eq!(refused.code, "host_not_allowed", "{host}");
        }
        let all = SiteGuard::new("0.0.0.0:8080".parse().unwrap(), &[]);
        assert!(all
            .check(&Method::GET, &headers(&[("host", "192.0.2.7:8080")]))
            .is_ok());
        assert!(all
            .check(&Method::GET, &headers(&[("host", "[2001:db8::1]:8080")]))
            .is_ok());
        assert!(all
            .check(&Method::GET, &headers(&[("host", "rebound.example:8080")]))
            .is_err());
        // No Host at all (an HTTP/1.0 client, not a browser) passes.
        assert!(guard.check(&Method::GET, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn only_the_listeners_own_origin_passes() {
        let guard = loopback();
        let ok = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(guard.check(&Method::GET, &ok).is_ok());
        for origin in [
            "http://attacker.example",
            "null",
            "http://127.0.0.1:9999",
            "http://127.0.0.1:8080.attacker.example",
        ] {
            let h = headers(&[("host", "127.0.0.1:8080"), ("origin", origin)]);
            assert_eq!(
                guard.check(&Method::GET, &h).unwrap_err().code,
                "cross_origin",
                "{origin}"
            );
        }
        let h = headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]);
        assert_eq!(
            guard.check(&Method::GET, &h).unwrap_err().code,
            "cross_origin"
        );
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(guard.check(&Method::GET, &h).is_ok());
    }

    #[test]
    fn changes_need_a_json_content_type() {
        let guard = loopback();
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            for content_type in [
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ] {
                let h = headers(&[("content-type", content_type)]);
                assert_eq!(
                    guard.check(&method, &h).unwrap_err().code,
                    "unsupported_media_type"
                );
            }
            assert!(guard.check(&method, &HeaderMap::new()).is_err());
            let json = headers(&[("content-type", "Application/JSON; charset=utf-8")]);
            assert!(guard.check(&method, &json).is_ok());
        }
        assert!(guard.check(&Method::GET, &HeaderMap::new()).is_ok());
    }
}
