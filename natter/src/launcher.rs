//! `natter run`: local NATS, Redis and clamd when none is configured, then the gateway, one fanout worker, one search indexer, (with a clamd) one media worker and (with push credentials) one push worker in this process.
//!
//! Shutdown order: the root token is cancelled (signal, or either role ending) → both roles finish
//! under a hard deadline → Redis and NATS get SIGTERM and are waited for. The servers run in their
//! own process group, so a terminal Ctrl-C reaches only this process and the order holds.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::task::{self, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::{self, CLAMD_ADDRESS, DEV_MODE, JWT_SECRET, NATS_URL, NatterConfig};
use crate::dev_secret::load_or_create_dev_secret;
use crate::local_services::LocalServices;
use crate::roles::{bind_listener, connect_nats};

/// Longer than the gateway's own close timeouts (5 s for sockets, 5 s for delivery tasks) plus a NATS flush.
const ROLE_STOP_DEADLINE: Duration = Duration::from_secs(20);

/// The user the banner prints a ready-made token for.
const BANNER_USER: &str = "alice";

/// Runs until `shutdown` is cancelled or a role fails; the local servers are stopped on every way out.
pub async fn run_all_in_one(
    mut config: NatterConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("failed to create data directory {}", data_dir.display()))?;
    let services = LocalServices::start_missing(&mut config, &data_dir).await?;
    let outcome = if shutdown.is_cancelled() {
        Ok(()) // Ctrl-C while the servers were starting: nothing else to start.
    } else {
        run_roles(config, &services, &data_dir, shutdown).await
    };
    services.stop().await;
    outcome
}

async fn run_roles(
    mut config: NatterConfig,
    services: &LocalServices,
    data_dir: &Path,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // A dev secret only next to our own NATS: against a shared cluster, dev mode would let anyone mint tokens.
    if config.get(JWT_SECRET).is_none() {
        if !services.runs_local_nats() {
            bail!(
                "{JWT_SECRET} is required with an external NATS ({NATS_URL} is set); only a local one gets a dev secret"
            );
        }
        config.set_if_unset(JWT_SECRET, load_or_create_dev_secret(data_dir)?);
        config.set_if_unset(DEV_MODE, "true");
    }
    let gateway_config = gateway::GatewayConfig::from_environment(config.environment())?;
    let fanout_config = fanout::FanoutConfig::from_environment(config.environment())?;
    let listener = bind_listener(&config).await?;
    // Roles with a NATS user only open the layout (see `subjects::Provisioning`); one process running
    // them all under one user makes it first, so that user must be allowed to.
    if config.get(crate::nats_credentials::NATS_USER).is_some() {
        crate::roles::run_provision(&config).await?;
    }
    let gateway_nats = connect_nats(&config, subjects::permissions::Role::Gateway).await?;
    let fanout_nats = connect_nats(&config, subjects::permissions::Role::Fanout).await?;
    print_banner(
        &config,
        services,
        listener.local_addr()?,
        &gateway_config,
        data_dir,
    );

    let mut roles = JoinSet::new();
    let mut role_names = HashMap::new();
    let gateway_task = roles.spawn(gateway::run(
        gateway_config,
        listener,
        gateway_nats,
        shutdown.clone(),
    ));
    role_names.insert(gateway_task.id(), "gateway");
    let fanout_task = roles.spawn(fanout::run(fanout_config, fanout_nats, shutdown.clone()));
    role_names.insert(fanout_task.id(), "fanout");
    if config.get(CLAMD_ADDRESS).is_some() {
        let media_config = media::MediaWorkerConfig::from_environment(config.environment())?;
        let media_nats = connect_nats(&config, subjects::permissions::Role::Media).await?;
        let media_task = roles.spawn(media::run(media_config, media_nats, shutdown.clone()));
        role_names.insert(media_task.id(), "media");
    }
    let indexer_config = indexer::IndexerConfig::from_environment(config.environment())?;
    let indexer_nats = connect_nats(&config, subjects::permissions::Role::Indexer).await?;
    let indexer_task = roles.spawn(indexer::run(indexer_config, indexer_nats, shutdown.clone()));
    role_names.insert(indexer_task.id(), "indexer");
    let push_providers = ["NATTER_PUSH_FCM_SERVICE_ACCOUNT_FILE", "NATTER_PUSH_APNS_KEY_FILE", "NATTER_PUSH_VAPID_KEY_FILE"];
    if push_providers.iter().any(|name| config.get(name).is_some()) {
        let push_config = push::PushWorkerConfig::from_environment(config.environment())?;
        let push_nats = connect_nats(&config, subjects::permissions::Role::Push).await?;
        let push_task = roles.spawn(push::run(push_config, push_nats, shutdown.clone()));
        role_names.insert(push_task.id(), "push");
    }
    wait_for_roles(roles, &role_names, shutdown).await
}

/// Waits for a signal or the first role to end, cancels the rest, and waits for them under a deadline.
/// Returns the first failure; a role that ends on its own before shutdown counts as one.
async fn wait_for_roles(
    mut roles: JoinSet<anyhow::Result<()>>,
    role_names: &HashMap<task::Id, &'static str>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    let first_ended = tokio::select! {
        _ = shutdown.cancelled() => None,
        joined = roles.join_next_with_id() => joined,
    };
    if let Some(joined) = first_ended {
        // Asking the token, not which branch won: after a signal both branches can be ready at once, and a
        // role that finished because of the signal has not stopped on its own.
        if let Some(failure) = role_failure(joined, role_names, !shutdown.is_cancelled()) {
            tracing::error!(error = %format!("{failure:#}"), "stopping everything");
            failures.push(failure);
        }
        shutdown.cancel();
    }
    let deadline = tokio::time::Instant::now() + ROLE_STOP_DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, roles.join_next_with_id()).await {
            Ok(Some(joined)) => failures.extend(role_failure(joined, role_names, false)),
            Ok(None) => break,
            Err(_) => {
                failures.push(anyhow!(
                    "roles still running {ROLE_STOP_DEADLINE:?} after shutdown began; aborted them"
                ));
                roles.shutdown().await;
                break;
            }
        }
    }
    let mut failures = failures.into_iter();
    let first_failure = failures.next();
    for later_failure in failures {
        tracing::error!(error = %format!("{later_failure:#}"), "another role failed too");
    }
    first_failure.map_or(Ok(()), Err)
}

fn role_failure(
    joined: Result<(task::Id, anyhow::Result<()>), task::JoinError>,
    role_names: &HashMap<task::Id, &'static str>,
    before_shutdown: bool,
) -> Option<anyhow::Error> {
    let role_name = |id| role_names.get(&id).copied().unwrap_or("a role");
    match joined {
        Ok((id, Ok(()))) if before_shutdown => {
            Some(anyhow!("{} stopped on its own", role_name(id)))
        }
        Ok((_, Ok(()))) => None,
        Ok((id, Err(error))) => Some(error.context(format!("{} failed", role_name(id)))),
        Err(join_error) => Some(anyhow!(
            "{} panicked or was aborted: {join_error}",
            role_name(join_error.id())
        )),
    }
}

/// Plain text on stdout (logs go to stderr), so the addresses and token are easy to copy.
fn print_banner(
    config: &NatterConfig,
    services: &LocalServices,
    bound: SocketAddr,
    gateway_config: &gateway::GatewayConfig,
    data_dir: &Path,
) {
    // A wildcard bind is reachable locally as 127.0.0.1; printing 0.0.0.0 would not be a usable URL.
    let reachable = if bound.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port())
    } else {
        bound
    };
    println!("Natter is running.");
    println!("  HTTP:      http://{reachable}");
    println!(
        "  WebSocket: ws://{reachable}/v1/ws (token as `Authorization: Bearer …` or ?token=…)"
    );
    for line in services.describe() {
        println!("  {line}");
    }
    if gateway_config.dev_mode {
        let user = subjects::Id::parse(BANNER_USER).expect("the banner user is a valid id");
        let token = gateway::Authenticator::new(&gateway_config.jwt).mint(&user);
        println!("  Dev token for {BANNER_USER}: {token}");
        let data_dir_flag = if config.get(config::DATA_DIR).is_some() {
            format!(" --data-dir {}", data_dir.display())
        } else {
            String::new()
        };
        println!("  Tokens for other users: natter token <user>{data_dir_flag}");
    } else {
        println!(
            "  Dev mode is off: mint tokens with `natter token <user>` and the configured secret."
        );
    }
    println!("Ctrl-C stops everything.");
}
