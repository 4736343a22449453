//! Every `natter_*` metric the Grafana dashboard and the Prometheus alert rules in `ops/` name is exported by a running system's `/metrics`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use testkit::{declared_families, scrape_metrics, wait_until};

use crate::operations_metrics::every_role_with_operations;

const METRIC_PREFIX: &str = "natter_";
/// Series suffixes Prometheus adds to a family's name: histograms' parts and counters' total.
const SERIES_SUFFIXES: [&str; 4] = ["_bucket", "_sum", "_count", "_total"];

fn ops_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("ops").join(relative)
}

/// Every `natter_*` identifier in a PromQL expression.
fn metric_names_in(expression: &str, names: &mut BTreeSet<String>) {
    let mut rest = expression;
    while let Some(start) = rest.find(METRIC_PREFIX) {
        let preceded_by_identifier = rest[..start].chars().next_back().is_some_and(|before| before.is_ascii_alphanumeric() || before == '_');
        let tail = &rest[start..];
        let end = tail.find(|character: char| !(character.is_ascii_alphanumeric() || character == '_')).unwrap_or(tail.len());
        if !preceded_by_identifier {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
}

/// The family a series name belongs to, as `# TYPE` declares it.
fn family_of(series: &str) -> &str {
    SERIES_SUFFIXES.iter().find_map(|suffix| series.strip_suffix(suffix)).unwrap_or(series)
}

fn dashboard_expressions(value: &serde_json::Value, expressions: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields {
                match field {
                    serde_json::Value::String(text) if key == "expr" => expressions.push(text.clone()),
                    other => dashboard_expressions(other, expressions),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| dashboard_expressions(item, expressions)),
        _ => {}
    }
}

fn referenced_metrics() -> anyhow::Result<BTreeSet<String>> {
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ops_file("grafana/natter-dashboard.json"))?)?;
    let mut expressions = Vec::new();
    dashboard_expressions(&dashboard, &mut expressions);
    anyhow::ensure!(expressions.len() >= 10, "the dashboard has a query per panel, found {}", expressions.len());

    let rules: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(ops_file("prometheus/natter-alerts.yml"))?)?;
    let groups = rules["groups"].as_sequence().ok_or_else(|| anyhow::anyhow!("the rules file has no groups"))?;
    let mut alert_names = BTreeSet::new();
    for rule in groups.iter().filter_map(|group| group["rules"].as_sequence()).flatten() {
        let expression = rule["expr"].as_str().ok_or_else(|| anyhow::anyhow!("a rule without an expr: {rule:?}"))?;
        expressions.push(expression.to_owned());
        alert_names.extend(rule["alert"].as_str().map(str::to_owned));
    }
    anyhow::ensure!(alert_names.contains("NatterDeliverySlowWithBacklog"), "the design's page is among the rules: {alert_names:?}");

    let mut names = BTreeSet::new();
    for expression in &expressions {
        metric_names_in(expression, &mut names);
    }
    Ok(names)
}

#[test]
fn metric_names_are_read_from_promql() {
    fn check(expression: &str, expected: &[&str]) {
        let mut names = BTreeSet::new();
        metric_names_in(expression, &mut names);
        assert_eq!(names.iter().map(String::as_str).collect::<Vec<_>>(), expected, "{expression}");
    }
    check("histogram_quantile(0.99, sum by (le) (rate(natter_delivery_latency_seconds_bucket[5m])))", &["natter_delivery_latency_seconds_bucket"]);
    check("natter_a > 1 and on () max(natter_b{consumer=\"fanout\"})", &["natter_a", "natter_b"]);
    check("not_natter_a + xnatter_b", &[]);
    assert_eq!(family_of("natter_push_outcomes_total"), "natter_push_outcomes");
    assert_eq!(family_of("natter_connections"), "natter_connections");
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_name_is_exported() -> anyhow::Result<()> {
    let referenced = referenced_metrics()?;
    let (_system, _workers, endpoints) = every_role_with_operations().await?;
    let missing = || async {
        let mut exported = BTreeSet::new();
        for endpoint in &endpoints {
            if let Ok(scrape) = scrape_metrics(endpoint).await {
                exported.extend(declared_families(&scrape));
            }
        }
        referenced.iter().filter(|series| !exported.contains(family_of(series))).cloned().collect::<Vec<_>>()
    };
    // Backlog gauges appear with the workers' first consumer sample, a moment after start.
    if wait_until("every referenced metric is exported", Duration::from_secs(30), || async { missing().await.is_empty() }).await.is_err() {
        anyhow::bail!("referenced in ops/ but exported by no endpoint: {:?}", missing().await);
    }
    Ok(())
}
