//! Destination URLs: `rtmp://HOST[:PORT]/APP[/...]` plus a stream key, the way
//! platforms hand them out (api.video `serverUrl` + `streamKey`, Livepush
//! `rtmpBase` + `rtmpKey`), or one URL whose last path segment is the key;
//! and `srt://HOST:PORT?streamid=…&passphrase=…&latency=…` for SRT (caller
//! mode, libsrt's URI conventions: `latency` in ms).

use std::fmt;
use std::time::Duration;

use prism_media::StreamKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Rtmp,
    Rtmps,
    Srt,
}

/// What an `srt://` URL sets beyond the address.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtOptions {
    /// SRTO_STREAMID; platforms put the stream key in it, so it is a secret.
    pub stream_id: Option<StreamKey>,
    /// SRTO_PASSPHRASE (10 to 79 characters).
    pub passphrase: Option<StreamKey>,
    /// SRTO_LATENCY; libsrt's default (120 ms) when absent.
    pub latency: Option<Duration>,
    /// SRTO_PBKEYLEN: 0 (let the listener choose; 16 by default), 16, 24, 32.
    pub key_length: u16,
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
    /// Stream name sent in `publish`: the destination's stream key (for
    /// SRT, the stream id, empty without one).
    pub stream_name: StreamKey,
    /// `USER:PASSWORD` from `rtmp://USER:PASSWORD@HOST/APP`: secret. Sent in
    /// the `tcUrl` of `connect` (where servers that check credentials read
    /// them); `tc_url` above and every display leave it out.
    pub credentials: Option<StreamKey>,
    /// For `srt://`.
    pub srt: Option<SrtOptions>,
}

impl DestinationUrl {
    /// What the RTMP session needs of the URL.
    pub fn publish_target(&self) -> prism_rtmp::PublishTarget {
        let tc_url = match &self.credentials {
            None => self.tc_url.clone(),
            Some(credentials) => {
                let (scheme, rest) = self.tc_url.split_once("://").unwrap_or(("rtmp", ""));
                format!("{scheme}://{}@{rest}", credentials.expose())
            }
        };
        prism_rtmp::PublishTarget {
            app: self.app.clone(),
            tc_url,
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
    #[error("srt:// url needs a port: srt://HOST:PORT")]
    SrtPort,
    #[error("srt:// urls take no USER:PASSWORD@: use ?passphrase= (or the streamid)")]
    SrtUserinfo,
    #[error("unsupported SRT option {0:?}: Prism reads streamid, passphrase, latency (ms), pbkeylen, mode=caller and transtype=live")]
    SrtOption(String),
    #[error("SRT option {name} has a bad value {value:?}: {expected}")]
    SrtValue {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl DestinationUrl {
    /// Parses `url`; `key` is the separate stream key, if the operator gave one.
    pub fn parse(url: &str, key: Option<&str>) -> Result<Self, UrlError> {
        if url.chars().any(char::is_whitespace) {
            return Err(UrlError::Whitespace);
        }
        if let Some(rest) = url.strip_prefix("srt://") {
            return Self::parse_srt(rest, key);
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
        // `USER:PASSWORD@` is secret: kept apart, never in an error.
        let (credentials, authority) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(StreamKey::new(userinfo)), host),
            None => (None, authority),
        };
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
        let scheme_text = if scheme == Scheme::Rtmps {
            "rtmps"
        } else {
            "rtmp"
        };
        Ok(Self {
            scheme,
            tc_url: format!("{scheme_text}://{authority}/{app}"),
            host,
            port,
            app: app.to_string(),
            stream_name: StreamKey::new(stream_name),
            credentials,
            srt: None,
        })
    }

    /// `srt://HOST:PORT[?options]`, after the scheme. A separate `key`
    /// is the stream id when the URL has none.
    fn parse_srt(rest: &str, key: Option<&str>) -> Result<Self, UrlError> {
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        if authority.contains('@') {
            return Err(UrlError::SrtUserinfo);
        }
        let (host, port) = split_host_port(authority, 0)?;
        if port == 0 {
            return Err(UrlError::SrtPort);
        }
        let mut options = SrtOptions {
            stream_id: key.filter(|k| !k.is_empty()).map(StreamKey::new),
            passphrase: None,
            latency: None,
            key_length: 0,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(raw);
            let bad = |name, expected| UrlError::SrtValue {
                name,
                value: if name == "passphrase" {
                    "…".into()
                } else {
                    value.clone()
                },
                expected,
            };
            match name {
                "streamid" => options.stream_id = Some(StreamKey::new(value.clone())),
                "passphrase" => {
                    if !(10..=79).contains(&value.len()) {
                        return Err(bad("passphrase", "10 to 79 characters"));
                    }
                    options.passphrase = Some(StreamKey::new(value.clone()));
                }
                "latency" => match value.parse::<u64>() {
                    Ok(ms) if ms <= 60_000 => options.latency = Some(Duration::from_millis(ms)),
                    _ => return Err(bad("latency", "milliseconds, 0 to 60000")),
                },
                "pbkeylen" => match value.parse::<u16>() {
                    Ok(length @ (0 | 16 | 24 | 32)) => options.key_length = length,
                    _ => return Err(bad("pbkeylen", "0, 16, 24 or 32")),
                },
                "mode" if value == "caller" => {}
                "mode" => return Err(bad("mode", "caller: Prism calls the destination")),
                "transtype" if value == "live" => {}
                "transtype" => return Err(bad("transtype", "live")),
                other => return Err(UrlError::SrtOption(other.to_string())),
            }
        }
        if options
            .stream_id
            .as_ref()
            .is_some_and(|id| id.expose().len() > 512)
        {
            return Err(UrlError::SrtValue {
                name: "streamid",
                value: "…".into(),
                expected: "at most 512 bytes",
            });
        }
        Ok(Self {
            scheme: Scheme::Srt,
            tc_url: format!("srt://{authority}"),
            host,
            port,
            app: String::new(),
            credentials: None,
            stream_name: options
                .stream_id
                .clone()
                .unwrap_or_else(|| StreamKey::new("")),
            srt: Some(options),
        })
    }

    /// `HOST:PORT`, with brackets around an IPv6 host.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Decodes `%XX` escapes (a stream id such as `#!::r=live/key,m=publish`
/// is often pasted escaped); anything else is kept as is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        match &self.srt {
            None => write!(f, "{}/{}", self.tc_url, self.stream_name),
            Some(options) => {
                write!(f, "{}", self.tc_url)?;
                if let Some(id) = &options.stream_id {
                    write!(f, "?streamid={id}")?;
                }
                Ok(())
            }
        }
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
    fn credentials_are_kept_apart_and_never_shown() {
        let url =
            DestinationUrl::parse("rtmp://bob:s3cret@relay.example:1936/live/key1", None).unwrap();
        assert_eq!(url.host, "relay.example");
        assert_eq!(url.port, 1936);
        assert_eq!(url.tc_url, "rtmp://relay.example:1936/live");
        assert!(!url.to_string().contains("s3cret"));
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(
            url.publish_target().tc_url,
            "rtmp://bob:s3cret@relay.example:1936/live"
        );
        assert!(!format!("{:?}", url.publish_target()).contains("s3cret"));
        // A bad port after credentials echoes the port, not the password.
        let error = DestinationUrl::parse("rtmp://bob:s3cret@relay.example:x/live/k", None)
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
        let error = DestinationUrl::parse("srt://bob:s3cret@relay.example:9000", None)
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }

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
    fn srt_urls_with_options_and_secrets_hidden() {
        let url = DestinationUrl::parse(
            "srt://ingest.example.com:9000?streamid=%23!::r=live/abcdef,m=publish&passphrase=0123456789ab&latency=400&pbkeylen=32",
            None,
        )
        .unwrap();
        assert_eq!(url.scheme, Scheme::Srt);
        assert_eq!(url.host_port(), "ingest.example.com:9000");
        let options = url.srt.clone().unwrap();
        assert_eq!(
            options.stream_id.as_ref().map(|k| k.expose().to_string()),
            Some("#!::r=live/abcdef,m=publish".into())
        );
        assert_eq!(options.passphrase.unwrap().expose(), "0123456789ab");
        assert_eq!(options.latency, Some(Duration::from_millis(400)));
        assert_eq!(options.key_length, 32);
        let shown = url.to_string();
        assert!(
            !shown.contains("abcdef") && !shown.contains("0123456789"),
            "{shown}"
        );
        // A separate key is the stream id; none at all is fine for SRT.
        let url = DestinationUrl::parse("srt://[::1]:6001", Some("KEY-1")).unwrap();
        assert_eq!(
            url.srt
                .as_ref()
                .unwrap()
                .stream_id
                .as_ref()
                .unwrap()
                .expose(),
            "KEY-1"
        );
        assert_eq!(url.host_port(), "[::1]:6001");
        assert!(DestinationUrl::parse("srt://127.0.0.1:6001?mode=caller", None).is_ok());
    }

    #[test]
    fn srt_errors_say_what_to_fix() {
        let error = |url| DestinationUrl::parse(url, None).unwrap_err().to_string();
        assert!(error("srt://host").contains("needs a port"));
        assert!(error("srt://h:1?passphrase=short").contains("10 to 79"));
        assert!(
            !error("srt://h:1?passphrase=short").contains("short"),
            "the passphrase is not echoed"
        );
        assert!(error("srt://h:1?latency=abc").contains("latency"));
        assert!(error("srt://h:1?pbkeylen=20").contains("16, 24 or 32"));
        assert!(error("srt://h:1?mode=listener").contains("caller"));
        assert!(error("srt://h:1?maxbw=5").contains("\"maxbw\""));
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
