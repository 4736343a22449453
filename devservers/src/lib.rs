//! Starts and stops local `nats-server` (one, or a 3-node cluster with cuttable links), `redis-server` and `clamd` processes for the all-in-one launcher and for tests.
//!
//! Each server is a child process owned by a value: dropping the value kills the process, so a
//! panicking test never leaves a server behind. Every server writes its output to a log file in
//! its data directory, and every error names that file.

mod binaries;
mod child_process;
mod clamd;
mod nats;
mod nats_cluster;
mod nats_monitoring;
mod redis;
mod tcp_proxy;

pub use binaries::{
    NATS_SERVER_BIN_ENV, REDIS_SERVER_BIN_ENV, SCHEMATHESIS_BIN_ENV, nats_server_binary, redis_server_binary,
    schemathesis_binary,
};
pub use child_process::log_tail;
pub use clamd::{CLAMD_BIN_ENV, ClamdServer, clamd_binary};
pub use nats::{NatsServer, NatsServerOptions, RouteOptions};
pub use nats_cluster::{CLUSTER_SIZE, NatsCluster, RouteTls, connect_nats};
pub use redis::{RedisServer, RedisServerOptions};
pub use tcp_proxy::TcpProxy;
