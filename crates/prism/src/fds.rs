//! File descriptors: every socket is one, and a shell or an old unit file
//! often gives a process a soft limit of 1024. Prism raises the soft limit
//! to the hard one at start, and keeps a reserve that nothing a peer without
//! a stream key can open may use, so that a returning encoder, the
//! destinations' sockets and the config file always find a descriptor.

use rlimit::Resource;

/// Descriptors kept out of reach of anonymous connections.
pub const FD_RESERVE: u64 = 256;

/// The open-files limit before and after [`raise_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit the process was started with.
    pub was: u64,
    /// The soft limit now in force.
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise_limit() -> std::io::Result<FdLimit> {
    let (was, hard) = Resource::NOFILE.get()?;
    if was < hard {
        Resource::NOFILE.set(hard, hard)?;
    }
    let (soft, hard) = Resource::NOFILE.get()?;
    Ok(FdLimit { was, soft, hard })
}

/// How many anonymous RTMP connections fit under `soft_limit` once the
/// reserve and what the HTTP listeners may hold are set aside (at least 16,
/// so a tiny limit still admits an encoder).
pub fn anonymous_rtmp_budget(soft_limit: u64, http_connections: usize) -> usize {
    let budget = soft_limit
        .saturating_sub(FD_RESERVE)
        .saturating_sub(http_connections as u64);
    usize::try_from(budget).unwrap_or(usize::MAX).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_the_reserve_and_the_http_caps() {
        assert_eq!(anonymous_rtmp_budget(1024, 128), 640);
        assert_eq!(anonymous_rtmp_budget(1_048_576, 128), 1_048_192);
        assert_eq!(anonymous_rtmp_budget(256, 128), 16);
        assert_eq!(
            anonymous_rtmp_budget(u64::MAX, 0) as u64,
            u64::MAX - FD_RESERVE
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limit = raise_limit().unwrap();
        assert_eq!(limit.soft, limit.hard);
        assert!(limit.was <= limit.soft);
    }
}
