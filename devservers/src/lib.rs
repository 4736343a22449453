//! Starts and stops local `nats-server`, `redis-server` and `clamd` processes for the all-in-one launcher and for tests.
//!
//! Each server is a child process owned by a value: dropping the value kills the process, so a
//! panicking test never leaves a server behind. Every server writes its output to a log file in
//! its data directory, and every error names that file.

mod binaries;
mod child_process;
mod clamd;
mod nats;
mod redis;

pub use binaries::{
    NATS_SERVER_BIN_ENV, REDIS_SERVER_BIN_ENV, SCHEMATHESIS_BIN_ENV, nats_server_binary, redis_server_binary,
    schemathesis_binary,
};
pub use clamd::{CLAMD_BIN_ENV, ClamdServer, clamd_binary};
pub use nats::{NatsServer, NatsServerOptions};
pub use redis::{RedisServer, RedisServerOptions};
