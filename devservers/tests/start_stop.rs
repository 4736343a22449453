//! Starts real nats-server and redis-server processes, kills and restarts them, and checks they answer on the same port.

use std::time::Duration;

use anyhow::Context;
use devservers::{NatsServer, RedisServer};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Connects like a NATS client and returns the server's first line, which must be its `INFO {...}`.
async fn read_nats_info_line(port: u16) -> anyhow::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .context("failed to connect to nats-server")?;
    let mut info_line = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(stream).read_line(&mut info_line),
    )
    .await
    .context("nats-server sent no INFO line within 5 s")?
    .context("failed to read the INFO line")?;
    Ok(info_line)
}

async fn redis_ping(port: u16) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .context("failed to connect to redis-server")?;
    stream.write_all(b"PING\r\n").await?;
    let mut reply = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut reply))
        .await
        .context("redis-server did not answer PING within 5 s")??;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Signal 0 checks whether a process exists without touching it.
fn process_exists(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

#[tokio::test]
async fn nats_server_survives_kill_and_restarts_on_the_same_port() -> anyhow::Result<()> {
    let store_dir = tempfile::tempdir()?;
    let mut nats = NatsServer::start(store_dir.path()).await?;
    let port = nats.port();
    assert_ne!(port, 4222, "tests must never use the default port");
    assert_eq!(nats.client_url(), format!("nats://127.0.0.1:{port}"));

    let info_line = read_nats_info_line(port).await?;
    assert!(
        info_line.starts_with("INFO {"),
        "unexpected first line: {info_line:?}"
    );
    assert!(
        info_line.contains("\"jetstream\":true"),
        "JetStream is off: {info_line:?}"
    );
    assert!(
        store_dir.path().join("jetstream").is_dir(),
        "no JetStream store under the store dir"
    );

    let first_pid = nats.pid();
    nats.kill().await;
    assert!(
        !process_exists(first_pid),
        "nats-server {first_pid} still exists after kill"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "port {port} still accepts after kill"
    );

    nats.restart().await?;
    assert_eq!(nats.port(), port);
    assert_ne!(nats.pid(), first_pid);
    let info_line = read_nats_info_line(port).await?;
    assert!(
        info_line.starts_with("INFO {"),
        "unexpected first line after restart: {info_line:?}"
    );

    let second_pid = nats.pid();
    nats.stop().await;
    assert!(
        !process_exists(second_pid),
        "nats-server {second_pid} still exists after stop"
    );
    let log = std::fs::read_to_string(nats.log_path())?;
    assert_eq!(
        log.matches("==== devservers: starting").count(),
        2,
        "one log header per start:\n{log}"
    );
    Ok(())
}

#[tokio::test]
async fn redis_server_answers_ping_and_restarts_on_the_same_port() -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    let mut redis = RedisServer::start(data_dir.path()).await?;
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(redis_ping(port).await?, "+PONG\r\n");

    let first_pid = redis.pid();
    redis.kill().await;
    assert!(
        !process_exists(first_pid),
        "redis-server {first_pid} still exists after kill"
    );

    redis.restart().await?;
    assert_eq!(redis.port(), port);
    assert_eq!(redis_ping(port).await?, "+PONG\r\n");

    let second_pid = redis.pid();
    redis.stop().await;
    assert!(
        !process_exists(second_pid),
        "redis-server {second_pid} still exists after stop"
    );
    Ok(())
}

#[tokio::test]
async fn dropping_the_servers_kills_the_processes() -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    let nats = NatsServer::start(&data_dir.path().join("nats")).await?;
    let redis = RedisServer::start(&data_dir.path().join("redis")).await?;
    let pids = [nats.pid(), redis.pid()];
    drop(nats);
    drop(redis);
    for pid in pids {
        assert!(
            !process_exists(pid),
            "process {pid} survived its owner being dropped"
        );
    }
    Ok(())
}

#[tokio::test]
async fn parallel_servers_get_different_ports() -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    let [first_dir, second_dir, first_redis_dir, second_redis_dir] =
        ["first", "second", "first-redis", "second-redis"].map(|name| data_dir.path().join(name));
    let (first, second) = tokio::try_join!(
        NatsServer::start(&first_dir),
        NatsServer::start(&second_dir)
    )?;
    assert_ne!(first.port(), second.port());
    let (first_redis, second_redis) = tokio::try_join!(
        RedisServer::start(&first_redis_dir),
        RedisServer::start(&second_redis_dir)
    )?;
    assert_ne!(first_redis.port(), second_redis.port());
    Ok(())
}

#[tokio::test]
async fn a_failed_start_names_the_log_file() -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    let broken_config = data_dir.path().join("broken.conf");
    std::fs::write(&broken_config, "this is { not a valid config")?;
    let error =
        match NatsServer::start_with_config(&broken_config, &data_dir.path().join("nats")).await {
            Ok(_) => anyhow::bail!("nats-server started with a broken config"),
            Err(error) => format!("{error:#}"),
        };
    assert!(
        error.contains("nats-server.log"),
        "error does not name the log: {error}"
    );
    Ok(())
}

#[tokio::test]
async fn redis_on_a_taken_port_fails_with_the_bind_error() -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    let port_holder = std::net::TcpListener::bind("127.0.0.1:0")?;
    let options = devservers::RedisServerOptions {
        port: Some(port_holder.local_addr()?.port()),
        ..Default::default()
    };
    let error = match RedisServer::start_with_options(data_dir.path(), options).await {
        Ok(_) => anyhow::bail!("redis-server started on a port that is already bound"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("Address already in use"),
        "error does not quote the log: {error}"
    );
    assert!(
        error.contains("redis-server.log"),
        "error does not name the log: {error}"
    );
    Ok(())
}
