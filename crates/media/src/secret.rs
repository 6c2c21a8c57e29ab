//! Secrets that must never reach logs, metrics labels or API responses in full.

use std::fmt;

/// A stream key (or a destination's stream name at its server). `Debug` and
/// `Display` show only a hint (`…a1b2`), so a key that slips into a log line
/// or an error message is still not disclosed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StreamKey(String);

impl StreamKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the few places that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The last four characters behind an ellipsis; keys of eight characters or
    /// fewer show nothing, since four of eight would give half the key away.
    pub fn hint(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() <= 8 {
            return "…".to_string();
        }
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("…{tail}")
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamKey({})", self.hint())
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_show_only_a_hint() {
        let key = StreamKey::new("live_8f2c1d9a1b2");
        assert_eq!(format!("{key}"), "…a1b2");
        assert_eq!(format!("{key:?}"), "StreamKey(…a1b2)");
        assert!(!format!("{key:?}").contains("8f2c"));
    }

    #[test]
    fn short_keys_show_nothing() {
        assert_eq!(StreamKey::new("abcd1234").hint(), "…");
    }
}
