//! Every role on its own NATS user: a nats-server started with the checked-in `nats-config/users.conf`, and connections as each role.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use subjects::permissions::Role;
use subjects::{Provisioning, StorageSettings};

use crate::{NatsServer, NatsServerOptions};

/// The file operators deploy, not a copy: these tests prove what ships.
pub fn users_conf_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats-config/users.conf")
}

/// A test-only password; the server reads it from its environment, as in production.
pub fn role_password(role: Role) -> String {
    format!("test-password-{}", role.user())
}

/// nats-server (JetStream, a free port, a store in `store_dir`) with one user per role and no anonymous access.
pub async fn start_nats_with_role_users(store_dir: &Path) -> anyhow::Result<NatsServer> {
    let environment = Role::ALL.into_iter().map(|role| (OsString::from(role.password_variable()), OsString::from(role_password(role)))).collect();
    let options = NatsServerOptions { config_file: Some(users_conf_path()), environment, ..NatsServerOptions::default() };
    NatsServer::start_with_options(store_dir, options).await
}

/// Makes the layout as the provisioner, then has every role's settings only open it, as `natter provision` and `NATTER_NATS_USER` do.
pub(crate) async fn provision_then_open_only(url: &str, settings: Vec<&mut StorageSettings>) -> anyhow::Result<()> {
    let provisioner = connect_as(url, Role::Provisioner).await?;
    let layout = settings.first().map(|first| (**first).clone()).unwrap_or_default();
    store::provision_layout(provisioner, &layout).await?;
    for settings in settings {
        settings.provisioning = Provisioning::OpenExisting;
    }
    Ok(())
}

/// A connection as `role`'s user with the role's inbox prefix, as `natter` makes it from `NATTER_NATS_USER`.
pub async fn connect_as(url: &str, role: Role) -> anyhow::Result<async_nats::Client> {
    connect_as_with(url, role, async_nats::ConnectOptions::new()).await
}

/// [`connect_as`] with more options (an event callback to see permission violations).
pub async fn connect_as_with(url: &str, role: Role, options: async_nats::ConnectOptions) -> anyhow::Result<async_nats::Client> {
    options
        .name(format!("natter-{}", role.user()))
        .user_and_password(role.user().to_owned(), role_password(role))
        .custom_inbox_prefix(role.inbox_prefix())
        .connect(url)
        .await
        .with_context(|| format!("failed to connect to {url} as {}", role.user()))
}
