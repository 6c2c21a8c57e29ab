//! The SRT stream id: which stream a caller publishes to. Accepts the plain
//! form (`KEY`, or `streamid=KEY` as some encoders pass it through) and the
//! SRT access-control form (`#!::r=KEY,m=publish`, `r=live/KEY`, with `u=`,
//! `s=`, `h=`, `t=` ignored). `KEY?backup=1` and `backup=1` among the
//! access-control fields publish the stream's backup source.

use prism_media::arbiter::SourceRole;
use prism_media::auth::parse_args;

#[derive(Debug, PartialEq, Eq)]
pub enum StreamIdError {
    Empty,
    /// `m=request` (play) or `m=bidirectional`: Prism only takes publishers.
    NotPublish(String),
    /// The access-control form without an `r=` resource.
    NoResource,
}

impl std::fmt::Display for StreamIdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamIdError::Empty => {
                f.write_str("empty stream id: publish with streamid=STREAM_KEY")
            }
            StreamIdError::NotPublish(mode) => write!(
                f,
                "mode {mode:?} refused: Prism accepts publishers only (m=publish)"
            ),
            StreamIdError::NoResource => {
                f.write_str("stream id has no r= resource: use #!::r=STREAM_KEY,m=publish")
            }
        }
    }
}

/// Whether an argument (of an RTMP stream name's query, or of SRT's
/// stream id fields) is `backup=1` (or `backup=true`).
pub fn names_backup(argument: &str) -> bool {
    matches!(
        argument.trim().split_once('='),
        Some(("backup", "1" | "true"))
    )
}

/// Which source a publish names: `backup=1` among its arguments makes it
/// the stream's backup; anything else is its primary.
pub fn source_role<'a>(mut arguments: impl Iterator<Item = &'a str>) -> SourceRole {
    if arguments.any(names_backup) {
        SourceRole::Backup
    } else {
        SourceRole::Primary
    }
}

/// The two forms a stream id takes.
enum Form<'a> {
    /// `KEY` (or `streamid=KEY`), and what follows a `?` after it.
    Plain { key: &'a str, query: &'a str },
    /// The access-control form's fields (after `#!::`).
    AccessControl(&'a str),
}

fn form(stream_id: &str) -> Form<'_> {
    let stream_id = stream_id.trim();
    // Some tools percent-encode the `#` of the access-control form in URLs.
    let fields = stream_id
        .strip_prefix("#!::")
        .or_else(|| stream_id.strip_prefix("%23!::"));
    match fields {
        Some(fields) => Form::AccessControl(fields),
        None => {
            let named = stream_id.strip_prefix("streamid=").unwrap_or(stream_id);
            let (key, query) = named.split_once('?').unwrap_or((named, ""));
            Form::Plain { key, query }
        }
    }
}

/// A stream id whose query came percent-encoded (`KEY%3Ftoken%3D…`, as a
/// URL-encoding tool writes it and ffmpeg 5 passes it on), decoded; any
/// other as it is.
pub fn unescaped(stream_id: &str) -> std::borrow::Cow<'_, str> {
    let encoded_query =
        !stream_id.contains('?') && (stream_id.contains("%3F") || stream_id.contains("%3f"));
    if encoded_query {
        std::borrow::Cow::Owned(prism_media::auth::decode(stream_id))
    } else {
        std::borrow::Cow::Borrowed(stream_id)
    }
}

/// The stream key a publisher names, and which of its sources. Never log
/// the key: it is secret.
pub fn publish_key(stream_id: &str) -> Result<(&str, SourceRole), StreamIdError> {
    let fields = match form(stream_id) {
        Form::Plain { key: "", .. } => return Err(StreamIdError::Empty),
        Form::Plain { key, query } => return Ok((key, source_role(query.split('&')))),
        Form::AccessControl(fields) => fields,
    };
    let mut resource = None;
    for field in fields.split(',') {
        let (name, value) = field.split_once('=').unwrap_or((field, ""));
        match name.trim() {
            "r" => resource = Some(value.trim()),
            "m" if value.trim() != "publish" => {
                return Err(StreamIdError::NotPublish(value.trim().to_string()))
            }
            _ => {}
        }
    }
    // `r=live/KEY`: the key is the last path segment.
    let key = resource
        .ok_or(StreamIdError::NoResource)?
        .rsplit('/')
        .next()
        .unwrap_or("");
    if key.is_empty() {
        Err(StreamIdError::NoResource)
    } else {
        Ok((key, source_role(fields.split(','))))
    }
}

/// What else a stream id says, for the authorisation hook: the resource's
/// path before the key (`r=live/KEY` → `live`) and the arguments: the
/// query after the key (`KEY?token=…`), or the access-control fields other
/// than `r` and `m` (`#!::r=KEY,m=publish,t=…`).
pub fn publish_context(stream_id: &str) -> (String, Vec<(String, String)>) {
    let fields = match form(stream_id) {
        Form::Plain { query, .. } => return (String::new(), parse_args(query, '&')),
        Form::AccessControl(fields) => fields,
    };
    let mut args = parse_args(fields, ',');
    let app = args
        .iter()
        .find(|(name, _)| name == "r")
        .and_then(|(_, resource)| resource.rsplit_once('/'))
        .map(|(app, _)| app.to_string())
        .unwrap_or_default();
    args.retain(|(name, _)| name != "r" && name != "m");
    (app, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_query_is_decoded_and_nothing_else_is() {
        assert_eq!(unescaped("live_abc%3Ftoken%3Dgood"), "live_abc?token=good");
        assert_eq!(unescaped("live_abc?token=a%20b"), "live_abc?token=a%20b");
        assert_eq!(unescaped("live%41bc"), "live%41bc");
    }

    #[test]
    fn the_context_names_the_app_and_the_arguments() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            publish_context("live_abc?token=good&backup=1"),
            (String::new(), pairs(&[("token", "good"), ("backup", "1")]))
        );
        assert_eq!(
            publish_context("#!::r=live/live_abc,m=publish,u=alice,token=t%2C1"),
            ("live".into(), pairs(&[("u", "alice"), ("token", "t,1")]))
        );
        assert_eq!(publish_context("live_abc"), (String::new(), Vec::new()));
    }

    #[test]
    fn backup_is_named_in_either_form() {
        let backup = |id| publish_key(id).map(|(key, role)| (key.to_string(), role));
        for id in [
            "live_abc?backup=1",
            "streamid=live_abc?backup=true",
            "live_abc?x=2&backup=1",
            "#!::r=live_abc,m=publish,backup=1",
        ] {
            assert_eq!(
                backup(id),
                Ok(("live_abc".into(), SourceRole::Backup)),
                "{id}"
            );
        }
        for id in [
            "live_abc?backup=0",
            "live_abc?backup",
            "#!::r=live_abc,backup=no",
        ] {
            assert_eq!(
                backup(id),
                Ok(("live_abc".into(), SourceRole::Primary)),
                "{id}"
            );
        }
    }

    #[test]
    fn plain_and_access_control_forms() {
        assert_eq!(
            publish_key("live_abc"),
            Ok(("live_abc", SourceRole::Primary))
        );
        assert_eq!(
            publish_key("streamid=live_abc"),
            Ok(("live_abc", SourceRole::Primary))
        );
        assert_eq!(
            publish_key("#!::r=live_abc,m=publish"),
            Ok(("live_abc", SourceRole::Primary))
        );
        assert_eq!(
            publish_key("#!::m=publish,r=live/live_abc,u=alice,s=123"),
            Ok(("live_abc", SourceRole::Primary))
        );
        assert_eq!(
            publish_key("#!::r=live_abc"),
            Ok(("live_abc", SourceRole::Primary))
        );
        assert_eq!(
            publish_key("%23!::r=live_abc,m=publish"),
            Ok(("live_abc", SourceRole::Primary))
        );
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(publish_key(""), Err(StreamIdError::Empty));
        assert_eq!(
            publish_key("#!::r=k,m=request"),
            Err(StreamIdError::NotPublish("request".into()))
        );
        assert_eq!(publish_key("#!::u=alice"), Err(StreamIdError::NoResource));
        assert_eq!(publish_key("#!::r=live/"), Err(StreamIdError::NoResource));
        assert!(StreamIdError::NotPublish("request".into())
            .to_string()
            .contains("publishers only"));
    }
}

#[cfg(test)]
mod no_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_stream_id(text in ".{0,200}", prefix in prop_oneof![Just(""), Just("#!::"), Just("%23!::"), Just("streamid=")]) {
            let id = format!("{prefix}{text}");
            if let Ok((key, _)) = publish_key(&id) {
                prop_assert!(!key.is_empty());
            }
        }
    }
}
