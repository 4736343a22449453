//! A role's NATS user by configuration: `natter provision` as the provisioner makes the layout, roles with their own users and inbox prefixes open it and run, and a half-configured user is refused.

use std::collections::HashMap;
use std::time::Duration;

use natter::config::NatterConfig;
use subjects::permissions::Role;
use testkit::role_users::{role_password, start_nats_with_role_users};
use tokio_util::sync::CancellationToken;

fn config_as(role: Role, nats_url: &str) -> anyhow::Result<NatterConfig> {
    let environment = HashMap::from([
        ("NATTER_NATS_URL".to_owned(), nats_url.to_owned()),
        ("NATTER_NATS_USER".to_owned(), role.user().to_owned()),
        ("NATTER_NATS_PASSWORD".to_owned(), role_password(role)),
    ]);
    NatterConfig::from_file_text_and_environment(None, &environment)
}

#[tokio::test]
async fn provision_then_roles_open_the_layout_on_their_own_users() -> anyhow::Result<()> {
    let store_dir = tempfile::tempdir()?;
    let server = start_nats_with_role_users(store_dir.path()).await?;
    let url = server.client_url();

    natter::roles::run_provision(&config_as(Role::Provisioner, &url)?).await?;

    // The gateway's user opens (never creates) the layout and round-trips through its own inbox.
    let gateway_config = config_as(Role::Gateway, &url)?;
    let settings = store::storage_settings_from_environment(gateway_config.environment())?;
    assert_eq!(settings.provisioning, subjects::Provisioning::OpenExisting);
    let gateway = natter::roles::connect_nats(&gateway_config, Role::Gateway).await?;
    let storage = store::Storage::provision(async_nats::jetstream::new(gateway), &settings).await?;
    storage.conversations.put("c1", "{}".into()).await?;
    assert!(storage.conversations.get("c1").await?.is_some());

    // `natter fanout` runs on its user: its durable consumer appears, and it stops cleanly.
    let shutdown = CancellationToken::new();
    let fanout = tokio::spawn({
        let config = config_as(Role::Fanout, &url)?;
        let shutdown = shutdown.clone();
        async move { natter::roles::run_fanout(&config, shutdown).await }
    });
    let provisioner = async_nats::jetstream::new(natter::roles::connect_nats(&config_as(Role::Provisioner, &url)?, Role::Provisioner).await?);
    testkit::wait_until("the fanout consumer exists", Duration::from_secs(20), || {
        let provisioner = provisioner.clone();
        async move {
            match provisioner.get_stream(subjects::MESSAGE_STREAM).await {
                Ok(stream) => stream.consumer_info(subjects::FANOUT_CONSUMER).await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await?;
    shutdown.cancel();
    fanout.await??;
    Ok(())
}

#[tokio::test]
async fn a_role_before_provisioning_says_so_and_a_half_configured_user_is_refused() -> anyhow::Result<()> {
    let store_dir = tempfile::tempdir()?;
    let server = start_nats_with_role_users(store_dir.path()).await?;
    let config = config_as(Role::Fanout, &server.client_url())?;
    let error = natter::roles::run_fanout(&config, CancellationToken::new()).await.expect_err("nothing to open yet");
    assert!(format!("{error:#}").contains("natter provision"), "{error:#}");

    let mut environment = config.environment().clone();
    environment.remove("NATTER_NATS_PASSWORD");
    let without_password = NatterConfig::from_file_text_and_environment(None, &environment)?;
    let error = natter::roles::connect_nats(&without_password, Role::Fanout).await.expect_err("a user needs its password");
    assert!(error.to_string().contains("NATTER_NATS_PASSWORD"), "{error}");
    Ok(())
}
