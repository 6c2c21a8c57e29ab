//! Where a hook is: an `http://` or `https://` URL, taken apart once when
//! the config is read. Its query may carry a token, so what is shown of it
//! (logs, metrics) is the scheme, host, port and path only.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct HookUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The path and query, as sent in the request line.
    pub path: String,
    /// `Host:` header value.
    pub authority: String,
}

impl HookUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!(
                "{:?} is not an http:// or https:// URL",
                shown(text)
            ));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(
                "user:password@ in a hook URL is not supported; put a token in its query or path"
                    .into(),
            );
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                if host.is_empty() {
                    return Err(format!("{:?} has no host", shown(text)));
                }
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("{port:?} is not a port"))?;
                (host, port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("{:?} has no host", shown(text)));
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Self {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            path,
            authority: authority.to_string(),
        })
    }

    /// Scheme, host, port and path: never the query.
    pub fn shown(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let path = self.path.split('?').next().unwrap_or("/");
        format!("{scheme}://{}{path}", self.authority)
    }
}

/// A URL as it may be shown: its query left out.
fn shown(text: &str) -> &str {
    text.split('?').next().unwrap_or(text)
}

impl fmt::Debug for HookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart_and_shown_without_their_query() {
        let url = HookUrl::parse("https://auth.example.com/prism/check?token=s3cret").unwrap();
        assert_eq!(
            (url.tls, url.host.as_str(), url.port, url.path.as_str()),
            (true, "auth.example.com", 443, "/prism/check?token=s3cret")
        );
        assert_eq!(url.shown(), "https://auth.example.com/prism/check");
        assert!(!format!("{url:?}").contains("s3cret"));
        let url = HookUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (url.port, url.path.as_str(), url.authority.as_str()),
            (8080, "/", "127.0.0.1:8080")
        );
        let url = HookUrl::parse("http://[::1]:9000/hook").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 9000));
        assert!(HookUrl::parse("ftp://x/").is_err());
        assert!(HookUrl::parse("http://:80/").is_err());
        assert!(HookUrl::parse("http://u:p@host/").is_err());
        assert!(HookUrl::parse("http://host:99999/").is_err());
    }
}
