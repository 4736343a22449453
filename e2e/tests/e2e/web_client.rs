//! The web client in a real browser: Playwright drives Debian's Chromium through two people's chat against a whole system (media scan, search, a gateway restart); and the client library's unit tests.
//!
//! The browser side is `web/tests/browser/chat.mjs`, run with node. It asks this test to stop and
//! start the gateway by printing `natter-test: <command>` lines and waits for the answer on its
//! stdin; everything else it prints is passed through. It saves screenshots on failure into
//! `target/browser-screenshots/`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use testkit::TestSystem;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Everything the script does (two browsers, a scan, an indexed search, a restart) must finish within this.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);
const CHROMIUM: &str = "/usr/bin/chromium";
const COMMAND_PREFIX: &str = "natter-test: ";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test]
async fn two_people_chat_in_real_browsers_through_a_gateway_restart() -> anyhow::Result<()> {
    let web = workspace_root().join("web");
    anyhow::ensure!(
        web.join("node_modules").join("playwright-core").is_dir(),
        "web/node_modules is missing: `cargo xtask setup` runs `npm ci` there"
    );
    anyhow::ensure!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: `cargo xtask setup` installs Debian's chromium");
    let screenshots = workspace_root().join("target").join("browser-screenshots");
    let mut system = TestSystem::builder().with_media().with_search().start().await?;
    let started = Instant::now();

    let mut script = Command::new("node")
        .arg(web.join("tests").join("browser").join("chat.mjs"))
        .current_dir(&web)
        .env("NATTER_URL", system.http_url(0))
        .env("NATTER_SCREENSHOT_DIR", &screenshots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("failed to start node (is Node.js installed?)")?;
    let mut answers = script.stdin.take().context("the script has no stdin")?;
    let mut lines = BufReader::new(script.stdout.take().context("the script has no stdout")?).lines();
    let mut direct_conversation = None;

    let conversation = tokio::time::timeout(SCRIPT_DEADLINE, async {
        while let Some(line) = lines.next_line().await? {
            let Some(command) = line.strip_prefix(COMMAND_PREFIX) else {
                eprintln!("[browser] {line}");
                continue;
            };
            eprintln!("[browser asks] {command} after {:?}", started.elapsed());
            let answer = match command.split_once(' ').unwrap_or((command, "")) {
                ("stop-gateway", _) => {
                    system.stop_gateway(0).await?;
                    "gateway-stopped"
                }
                ("start-gateway", _) => {
                    system.restart_gateway(0).await?;
                    "gateway-started"
                }
                ("direct-conversation", id) => {
                    direct_conversation = Some(id.to_owned());
                    "noted"
                }
                (other, _) => anyhow::bail!("the browser script asked for {other:?}, which this test does not know"),
            };
            answers.write_all(format!("{answer}\n").as_bytes()).await?;
            answers.flush().await?;
        }
        anyhow::Ok(direct_conversation)
    })
    .await
    .with_context(|| format!("the browser script did not finish within {SCRIPT_DEADLINE:?}"))??;
    let status = script.wait().await?;
    eprintln!("browser script finished with {status} after {:?}", started.elapsed());
    anyhow::ensure!(status.success(), "the browser script failed ({status}); screenshots, if any, are in {}", screenshots.display());

    // The browsers saw each message once; the log must agree: no send stored twice across the restart.
    let conversation = conversation.context("the script never named its direct conversation")?;
    let history = system.api(0, "alice").history(&conversation, "limit=200").await?;
    let seqs: Vec<u64> = history.messages.iter().map(|message| message.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "the log is gapless");
    let mut client_msg_ids = HashSet::new();
    for message in &history.messages {
        assert!(client_msg_ids.insert((&message.sender, &message.client_msg_id)), "stored twice: {message:?}");
    }
    let offline_sends = history.messages.iter().filter(|message| message.body.text.as_deref() == Some("written while the gateway was down")).count();
    assert_eq!(offline_sends, 1, "the send queued while offline is stored exactly once");
    Ok(())
}

/// The protocol library's own tests (`web/tests/unit/`, node's test runner): window, dedupe, gaps, resends and backoff against a scripted gateway.
#[tokio::test]
async fn the_client_library_passes_its_unit_tests() -> anyhow::Result<()> {
    let output = Command::new("node")
        .args(["--test", "tests/unit/"])
        .current_dir(workspace_root().join("web"))
        .output()
        .await
        .context("failed to start node (is Node.js installed?)")?;
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(output.status.success(), "the client library's unit tests failed:\n{report}");
    anyhow::ensure!(report.contains("# fail 0") && !report.contains("# pass 0"), "unexpected test report:\n{report}");
    Ok(())
}
