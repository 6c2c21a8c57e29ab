//! Destination URLs: `rtmp://HOST[:PORT]/APP[/...]` plus a stream key, the way
//! platforms hand them out (api.video `serverUrl` + `streamKey`, Livepush
//! `rtmpBase` + `rtmpKey`), or one URL whose last path segment is the key.

use std::fmt;

use prism_media::StreamKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Rtmp,
    Rtmps,
}

/// A parsed destination; `Display` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct DestinationUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Application name sent in `connect` (may hold slashes and a query).
    pub app: String,
    /// `tcUrl` sent in `connect`: the URL up to and including the app.
    pub tc_url: String,
    /// Stream name sent in `publish`: the destination's stream key.
    pub stream_name: StreamKey,
}

impl DestinationUrl {
    /// What the RTMP session needs of the URL.
    pub fn publish_target(&self) -> prism_rtmp::PublishTarget {
        prism_rtmp::PublishTarget {
            app: self.app.clone(),
            tc_url: self.tc_url.clone(),
            stream_name: self.stream_name.expose().to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("url must start with rtmp:// or rtmps:// (got {0:?})")]
    Scheme(String),
    #[error("url has no host")]
    NoHost,
    #[error("url has a bad port {0:?}")]
    Port(String),
    #[error("url has no application name: expected rtmp://HOST/APP")]
    NoApp,
    #[error("no stream key: set `key`, or end the url with /STREAM_KEY")]
    NoKey,
    #[error("url contains whitespace")]
    Whitespace,
}

impl DestinationUrl {
    /// Parses `url`; `key` is the separate stream key, if the operator gave one.
    pub fn parse(url: &str, key: Option<&str>) -> Result<Self, UrlError> {
        if url.chars().any(char::is_whitespace) {
            return Err(UrlError::Whitespace);
        }
        let (scheme, rest, default_port) = if let Some(rest) = url.strip_prefix("rtmp://") {
            (Scheme::Rtmp, rest, 1935)
        } else if let Some(rest) = url.strip_prefix("rtmps://") {
            (Scheme::Rtmps, rest, 443)
        } else {
            let shown = url.split("://").next().unwrap_or(url);
            return Err(UrlError::Scheme(shown.to_string()));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = split_host_port(authority, default_port)?;
        let path = path.trim_end_matches('/');
        let (app, stream_name) = match key.filter(|k| !k.is_empty()) {
            Some(key) => (path, key),
            None => match path.rsplit_once('/') {
                Some((app, name)) if !name.is_empty() => (app, name),
                _ if path.is_empty() => return Err(UrlError::NoApp),
                _ => return Err(UrlError::NoKey),
            },
        };
        if app.is_empty() {
            return Err(UrlError::NoApp);
        }
        let scheme_text = match scheme {
            Scheme::Rtmp => "rtmp",
            Scheme::Rtmps => "rtmps",
        };
        Ok(Self {
            scheme,
            tc_url: format!("{scheme_text}://{authority}/{app}"),
            host,
            port,
            app: app.to_string(),
            stream_name: StreamKey::new(stream_name),
        })
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        // [IPv6]:port
        let (host, after) = rest.split_once(']').ok_or(UrlError::NoHost)?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    let port = match port {
        None => default_port,
        Some(text) => match text.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(UrlError::Port(text.to_string())),
        },
    };
    Ok((host.to_string(), port))
}

impl fmt::Display for DestinationUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tc_url, self.stream_name)
    }
}

impl fmt::Debug for DestinationUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_url_plus_key() {
        let url = DestinationUrl::parse("rtmp://a.rtmp.youtube.com/live2", Some("abcd-efgh-ijkl"))
            .unwrap();
        assert_eq!(url.host, "a.rtmp.youtube.com");
        assert_eq!(url.port, 1935);
        assert_eq!(url.app, "live2");
        assert_eq!(url.tc_url, "rtmp://a.rtmp.youtube.com/live2");
        assert_eq!(url.stream_name.expose(), "abcd-efgh-ijkl");
        assert_eq!(url.to_string(), "rtmp://a.rtmp.youtube.com/live2/…ijkl");
    }

    #[test]
    fn key_as_last_path_segment() {
        let url = DestinationUrl::parse("rtmp://127.0.0.1:19350/app/fullkey", None).unwrap();
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 19350));
        assert_eq!(url.app, "app");
        assert_eq!(url.stream_name.expose(), "fullkey");
        assert_eq!(url.tc_url, "rtmp://127.0.0.1:19350/app");
    }

    #[test]
    fn rtmps_with_trailing_slash_and_nested_app() {
        let url = DestinationUrl::parse("rtmps://live-api-s.facebook.com:443/rtmp/", Some("FB-1"))
            .unwrap();
        assert_eq!(url.scheme, Scheme::Rtmps);
        assert_eq!(url.app, "rtmp");
        let url = DestinationUrl::parse("rtmp://[::1]/a/b/key", None).unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 1935));
        assert_eq!(url.app, "a/b");
    }

    #[test]
    fn errors_say_what_to_fix() {
        let cases = [
            ("http://x/app", None, UrlError::Scheme("http".into())),
            ("rtmp:///app/k", None, UrlError::NoHost),
            (
                "rtmp://host:99999/app",
                Some("k"),
                UrlError::Port("99999".into()),
            ),
            ("rtmp://host", Some("k"), UrlError::NoApp),
            ("rtmp://host/app", None, UrlError::NoKey),
            ("rtmp://host/ app", Some("k"), UrlError::Whitespace),
        ];
        for (url, key, want) in cases {
            assert_eq!(DestinationUrl::parse(url, key), Err(want), "{url}");
        }
    }
}
