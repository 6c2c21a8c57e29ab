//! Links that fetch one recording for a while without the bearer token: a
//! browser's download or `<video src>` cannot send an `Authorization`
//! header. A link names the recording and when it expires, signed with an
//! HMAC-SHA256 key derived from the admin token; it opens that file alone,
//! until then.

use std::time::{Duration, SystemTime};

use ring::hmac;

/// How long a link the API hands out works.
pub const LINK_LIFETIME: Duration = Duration::from_secs(3600);

pub struct LinkSigner {
    key: hmac::Key,
}

impl LinkSigner {
    /// A signer whose key is derived from the admin token (a link made with
    /// one token never works with another).
    pub fn new(token: &str) -> Self {
        let derive = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
        let key = hmac::sign(&derive, b"prism recording download link v1");
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.as_ref()),
        }
    }

    /// The query (`expires=…&signature=…`) of a link to `id` that works
    /// until `expires` (seconds since the epoch).
    pub fn query(&self, id: &str, expires: u64) -> String {
        let tag = hmac::sign(&self.key, &message(id, expires));
        format!("expires={expires}&signature={}", hex(tag.as_ref()))
    }

    /// Whether `query` is a live link to `id` at `now`.
    pub fn verify(&self, id: &str, query: &str, now: SystemTime) -> bool {
        let value = |name: &str| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value)
        };
        let (Some(expires), Some(signature)) = (value("expires"), value("signature")) else {
            return false;
        };
        let (Ok(expires), Some(signature)) = (expires.parse::<u64>(), unhex(signature)) else {
            return false;
        };
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Constant time (ring's verify), so timing reveals nothing.
        now <= expires && hmac::verify(&self.key, &message(id, expires), &signature).is_ok()
    }
}

fn message(id: &str, expires: u64) -> Vec<u8> {
    format!("{id}\n{expires}").into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_opens_its_recording_until_it_expires_and_nothing_else() {
        let signer = LinkSigner::new("admin-token-0123456789");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let query = signer.query("main-20261207-150835", 1_000_060);
        assert!(signer.verify("main-20261207-150835", &query, now));
        // Not after it expires, not for another file, not with another token.
        assert!(!signer.verify(
            "main-20261207-150835",
            &query,
            now + Duration::from_secs(61)
        ));
        assert!(!signer.verify("main-20261207-150836", &query, now));
        assert!(!LinkSigner::new("another-token-0123456789").verify(
            "main-20261207-150835",
            &query,
            now
        ));
        // A later expiry with the old signature is refused.
        let forged = query.replace("1000060", "9000060");
        assert!(!signer.verify("main-20261207-150835", &forged, now));
        for bad in [
            "",
            "expires=1000060",
            "signature=00",
            "expires=x&signature=zz",
        ] {
            assert!(!signer.verify("main-20261207-150835", bad, now), "{bad}");
        }
    }
}
