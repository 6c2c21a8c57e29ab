// PRISM PATCH: the cookie was a hash of the address and the time with a
// fixed key (`DefaultHasher::new()`), so anyone could compute the cookie of
// any address, and the "minutes" were seconds (`as_secs() * 60`). It is now
// keyed with a per-process random secret and changes once a minute; a
// cookie of the current or the previous minute is valid, so the listener can
// answer inductions without keeping state (see listener/mod.rs).
use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hash, Hasher},
    net::SocketAddr,
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

fn cookie_for_minute(saddr: &SocketAddr, minute: u64) -> i32 {
    static SECRET: OnceLock<RandomState> = OnceLock::new();
    let mut hasher = SECRET.get_or_init(RandomState::new).build_hasher();
    saddr.hash(&mut hasher);
    minute.hash(&mut hasher);
    hasher.finish() as u32 as i32
}

fn current_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs() / 60)
        .unwrap_or(0)
}

pub fn gen_cookie(saddr: &SocketAddr) -> i32 {
    cookie_for_minute(saddr, current_minute())
}

/// Whether `cookie` is one this process handed to `saddr` in the current or
/// the previous minute.
pub fn is_valid_cookie(saddr: &SocketAddr, cookie: i32) -> bool {
    let minute = current_minute();
    cookie == cookie_for_minute(saddr, minute)
        || cookie == cookie_for_minute(saddr, minute.saturating_sub(1))
}
