//! Black-box tests of Natter over real sockets against real servers, in one test binary (one link, one copy of debug info).

mod auth;
mod authorization_matrix;
mod bad_input;
mod encrypted;
mod idempotency;
mod media;
mod membership;
mod openapi;
mod operations_dashboards;
mod operations_metrics;
mod operations_process;
mod messaging;
mod ordering;
mod presence_typing;
mod push_delivery;
mod push_registration;
mod rate_limits;
mod receipts;
mod request_ids;
mod search;
mod search_analysts;
mod search_recovery;
mod slow_client;
mod sync;
mod web_client;
