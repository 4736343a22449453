//! schemathesis against a live gateway with the checked-in `docs/openapi.json`: no 5xx, and every response as the document says.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::TestSystem;

/// A guard against a hung run; a normal one takes well under a minute.
const SCHEMATHESIS_DEADLINE: Duration = Duration::from_secs(240);
/// Test cases per operation and phase: enough to reach past validation into storage, small enough for a 2-core machine.
const MAX_EXAMPLES: &str = "100";
/// Fixed, so a failure reproduces; `NATTER_SCHEMATHESIS_SEED` (and `NATTER_SCHEMATHESIS_MAX_EXAMPLES`) explore further.
const DEFAULT_SEED: &str = "20261130";

/// What is checked on every response, and why the rest are left out:
/// * `positive_data_acceptance`: schema-valid ids the caller has no access to are rightly `403`/`404`.
/// * `ensure_resource_availability`: its inferred links read `POST .../members` as creating `.../members/{user}`, and a
///   scenario in which the caller removes itself (rightly `204`) then expects the group to stay readable; it is `404`
///   to a non-member by design, so ids cannot be probed.
/// * `object_level_authorization`: needs a second user's credentials; `authorization_matrix.rs` covers who may do what.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,\
                      response_headers_conformance,negative_data_rejection,ignored_auth,missing_required_header,\
                      unsupported_method,allow_header_conformance,use_after_free";

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_undocumented_response() -> anyhow::Result<()> {
    let schemathesis = testkit::schemathesis_binary()?;
    // The indexer answers searches: without one, search is rightly `unavailable`, which would hide real 5xx there.
    let system = TestSystem::builder().with_search().start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("openapi", &["bob"]).await?;
    alice.send_text_ok(&group.id, "m1", "hello schemathesis").await?;
    // Nobody can leave a direct conversation, so sends into it stay possible whatever schemathesis did to the group first.
    let direct = alice.create_direct("bob").await?;
    alice.send_text_ok(&direct.id, "d1", "hello again").await?;
    // An analyst token scoped to the conversations is also a member's token for alice, so the analysts' endpoint gets past 403 too.
    let token = system.analyst_token("alice", Some(&[group.id.as_str(), direct.id.as_str()]));
    let work = tempfile::tempdir()?;
    let config = work.path().join("schemathesis.toml");
    std::fs::write(&config, config_toml(&[&group.id, &direct.id]))?;
    let document = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let seed = std::env::var("NATTER_SCHEMATHESIS_SEED").unwrap_or_else(|_| DEFAULT_SEED.to_owned());
    let max_examples = std::env::var("NATTER_SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.to_owned());
    let mut command = tokio::process::Command::new(&schemathesis);
    command
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(&document)
        .args(["--url", &system.http_url(0)])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS])
        .args(["--workers", "1", "--max-examples", &max_examples, "--seed", &seed])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--report", "har", "--report-dir", "reports"])
        // Reports and caches land in the temp dir, not the checkout.
        .current_dir(work.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let output = tokio::time::timeout(SCHEMATHESIS_DEADLINE, command.output())
        .await
        .map_err(|_| anyhow::anyhow!("schemathesis did not finish within {SCHEMATHESIS_DEADLINE:?}"))??;
    let report = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(output.status.success(), "schemathesis failed ({}) after {:?}:\n{report}", output.status, started.elapsed());
    // A run that only ever got 403s would pass too: messages it sent show the authorised paths were reached. (Not the
    // group's history: schemathesis may well have made alice leave it.) Its generated sends mostly carry a `reply_to`,
    // which in the empty groups it makes itself is rightly refused by the tail check, the last step before the append:
    // such a refusal shows the send path was reached as well.
    let jetstream = async_nats::jetstream::new(system.connect_nats().await?);
    let stored = jetstream.get_stream(subjects::MESSAGE_STREAM).await?.info().await?.state.messages;
    let refused_at_the_tail = sends_refused_at_the_tail(&work.path().join("reports"))?;
    eprintln!("schemathesis passed in {:?}; {stored} messages stored, {refused_at_the_tail} replies refused at the tail", started.elapsed());
    anyhow::ensure!(stored > 2 || refused_at_the_tail > 0, "schemathesis never got a message past authorisation:\n{report}");
    Ok(())
}

/// `POST /v1/messages` answers in schemathesis' HAR reports that refused a `reply_to` the conversation does not hold yet.
fn sends_refused_at_the_tail(report_dir: &Path) -> anyhow::Result<usize> {
    let mut refused = 0;
    for entry in std::fs::read_dir(report_dir)? {
        let har: serde_json::Value = serde_json::from_slice(&std::fs::read(entry?.path())?)?;
        let entries = har["log"]["entries"].as_array().cloned().unwrap_or_default();
        refused += entries
            .iter()
            .filter(|entry| entry["request"]["method"] == "POST" && entry["request"]["url"].as_str().is_some_and(|url| url.split('?').next().is_some_and(|path| path.ends_with("/v1/messages"))))
            .filter(|entry| entry["response"]["status"] == 400 && entry["response"]["content"]["text"].as_str().is_some_and(|text| text.contains("reply_to")))
            .count();
    }
    Ok(refused)
}

/// Values schemathesis mixes into what it generates: known-good ids, so authorised paths get exercised and not only
/// `403`s, and edge cases it would not find by chance.
fn config_toml(conversations: &[&str]) -> String {
    let conversations = conversations.iter().map(|id| format!("\"{id}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"[dictionaries.conversations]
values = [{conversations}]

[dictionaries.users]
values = ["bob", "carol"]

# A forged cursor at the very top of u64: its offset plus the page size once overflowed.
[dictionaries.cursors]
values = ["18446744073709551615.0.0", "980.1.0"]

[parameters]
"path.id" = {{ dictionary = "conversations", probability = 0.5 }}
"query.conversation_id" = {{ dictionary = "conversations", probability = 0.5 }}
"body.conversation_id" = {{ dictionary = "conversations", probability = 0.5 }}
"path.user" = {{ dictionary = "users", probability = 0.5 }}
"body.user" = {{ dictionary = "users", probability = 0.5 }}
"query.cursor" = {{ dictionary = "cursors", probability = 0.3 }}
"#
    )
}
