//! Publish authorisation by something outside Prism: before a publish is
//! admitted, ingest describes it (`PublishAttempt`) and the authoriser the
//! control plane installed (an HTTP hook) answers. Ingest only sees this
//! trait; how it is asked, cached and bounded is the authoriser's.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use crate::hub::IngestProtocol;
pub use crate::hub::Refusal;

/// A publish about to be admitted, as the authoriser is told of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishAttempt {
    /// The key the publisher named (secret: never logged).
    pub key: String,
    pub protocol: IngestProtocol,
    pub remote: SocketAddr,
    /// RTMP's application (`live` in `rtmp://host/live/KEY`); SRT's
    /// resource path before the key (`r=live/KEY`), or empty.
    pub app: String,
    /// The arguments after the key (`KEY?token=…`), in order, decoded.
    pub args: Vec<(String, String)>,
}

/// The authoriser's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; for a key Prism does not know, onto the stream named.
    Admit {
        stream: Option<String>,
    },
    Refuse(Refusal),
}

/// Decides who may publish: `stream` is the configured stream the key
/// names, or `None` for a key Prism does not know. `None` back means the
/// authoriser was not asked (no hook for that stream): Prism decides alone.
pub trait PublishAuthorizer: Send + Sync {
    fn authorize<'a>(
        &'a self,
        attempt: &'a PublishAttempt,
        stream: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Option<Verdict>> + Send + 'a>>;
}

/// The arguments of a query (`token=a%20b&x`), percent-decoded, in order;
/// `backup=1` (Prism's own) included. At most 32, each at most 1 KiB.
pub fn parse_args(query: &str, separator: char) -> Vec<(String, String)> {
    query
        .split(separator)
        .filter(|pair| !pair.trim().is_empty())
        .take(32)
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name.trim()), decode(value.trim()))
        })
        .collect()
}

/// Percent-decoding (and `+` as a space), cut at 1 KiB; invalid escapes are
/// kept as they are.
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len().min(1024));
    let mut at = 0;
    while at < bytes.len() && out.len() < 1024 {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[at] {
            b'%' if at + 2 < bytes.len() => match (hex(bytes[at + 1]), hex(bytes[at + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    at += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_split_and_decoded() {
        assert_eq!(
            parse_args("token=a%20b+c&backup=1&flag&&x=%zz", '&'),
            [
                ("token".into(), "a b c".into()),
                ("backup".into(), "1".into()),
                ("flag".into(), String::new()),
                ("x".into(), "%zz".into()),
            ]
        );
        assert_eq!(
            parse_args("u=me,t=stream", ','),
            [("u".into(), "me".into()), ("t".into(), "stream".into())]
        );
        assert_eq!(parse_args("a=%4", '&'), [("a".into(), "%4".into())]);
        assert!(parse_args("", '&').is_empty());
        assert_eq!(parse_args(&"a&".repeat(100), '&').len(), 32);
        assert_eq!(decode(&"x".repeat(5000)).len(), 1024);
    }
}
