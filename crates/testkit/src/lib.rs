//! What Prism's tests and its load harness share, so that each exists once:
//! free ports, launchers for the real peers the suite runs against
//! (nginx-rtmp, redis-server), a fake RTMP destination that misbehaves on
//! request, and the fan-out rig and counting allocator that the fan-out
//! benchmark and the allocation test measure with. Never a dependency of
//! the daemon.

pub mod alloc;
pub mod clip;
pub mod fanout_rig;
pub mod nginx;
pub mod ports;
pub mod probe;
pub mod redis;
pub mod rtmp;

pub use nginx::{Nginx, NGINX_RTMP_MODULE};
pub use ports::{free_port, wait_for_port};
pub use redis::RedisServer;
