//! One Natter role (`role_process gateway|fanout|media|push|indexer`) as a process of its own, built beside the e2e tests so that they can SIGKILL and restart real roles (cargo hands them its path).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).unwrap_or_default();
    let role = match name.as_str() {
        "gateway" => natter::Role::Gateway,
        "fanout" => natter::Role::Fanout,
        "media" => natter::Role::Media,
        "push" => natter::Role::Push,
        "indexer" => natter::Role::Indexer,
        _ => anyhow::bail!("usage: role_process gateway|fanout|media|push|indexer (got {name:?})"),
    };
    natter::run_single_role(role).await
}
