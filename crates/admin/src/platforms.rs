//! Platform presets (`config/platforms.toml`): server URLs operators would
//! otherwise copy from each platform's dashboard.

use std::sync::{Arc, OnceLock};

use prism_fanout::rules::{PlatformLimits, PlatformRules};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    pub id: String,
    pub name: String,
    /// Server URL; absent for `custom`, where the operator gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub protocol: String,
    /// The platform gives each account its own server URL; the preset is a
    /// typical one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_account_url: bool,
    /// What it takes, as it publishes it (checked against the stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PlatformLimits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlatformFile {
    platforms: Vec<Platform>,
}

/// Every preset, in file order.
pub fn all() -> &'static [Platform] {
    static PLATFORMS: OnceLock<Vec<Platform>> = OnceLock::new();
    PLATFORMS.get_or_init(|| {
        let text = include_str!("../../../config/platforms.toml");
        toml::from_str::<PlatformFile>(text)
            .expect("config/platforms.toml is checked by a unit test")
            .platforms
    })
}

pub fn find(id: &str) -> Option<&'static Platform> {
    all().iter().find(|p| p.id == id)
}

/// The rules a destination naming platform `id` is held to, if it
/// publishes any.
pub fn rules(id: &str) -> Option<Arc<PlatformRules>> {
    let platform = find(id)?;
    Some(Arc::new(PlatformRules {
        name: platform.name.clone(),
        limits: platform.limits.clone()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_fanout::DestinationUrl;

    #[test]
    fn presets_parse_and_cover_the_big_platforms() {
        for id in [
            "youtube",
            "twitch",
            "facebook",
            "instagram",
            "linkedin",
            "kick",
            "x",
            "tiktok",
            "trovo",
            "custom",
        ] {
            assert!(find(id).is_some(), "missing preset {id}");
        }
        for platform in all() {
            if let Some(url) = &platform.url {
                let parsed = DestinationUrl::parse(url, Some("key")).unwrap();
                assert!(
                    url.starts_with(&platform.protocol),
                    "{url} vs {}",
                    platform.protocol
                );
                assert!(!parsed.app.is_empty());
            } else {
                assert_eq!(platform.id, "custom");
            }
        }
    }
}
