//! The load generator's smoke run against an in-process Natter (testkit), so the harness cannot rot unnoticed.

use loadgen::scenario_latency::{LatencyOptions, WorkerMode, run_latency};
use loadgen::system_under_test::Target;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_run_delivers_and_measures_natter_and_the_baseline() -> anyhow::Result<()> {
    let system = testkit::TestSystem::start().await?;
    let gateway = system.http_url(0).trim_start_matches("http://").parse()?;
    let target = Target { gateways: vec![gateway], nats_url: system.nats.client_url(), jwt_secret: system.gateway_config().jwt.secret.clone(), processes: Vec::new() };
    let mut options = LatencyOptions::smoke();
    options.worker_mode = WorkerMode::InProcess;

    let reports = tokio::time::timeout(std::time::Duration::from_secs(25), run_latency(&target, &options)).await??;

    assert_eq!(reports.len(), 2, "one natter and one baseline phase: {reports:#?}");
    for report in &reports {
        assert!(report.deliveries > 0, "{} delivered nothing: {report:#?}", report.system);
        assert_eq!(report.missing_deliveries, 0, "{} lost deliveries: {report:#?}", report.system);
        assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.max >= report.latency_ms.p99, "{} latency data is missing: {report:#?}", report.system);
        assert_eq!(report.own_echo_ms.count, report.measured_sends, "{}: every send echoes to its sender", report.system);
        assert_eq!(report.ack_ms.count, report.measured_sends, "{}: every send is acked", report.system);
        assert!(report.curve.len() > 5, "{}: no curve to plot", report.system);
    }
    let natter = &reports[0];
    assert_eq!(natter.system, "natter");
    assert_eq!(natter.errors, 0, "natter errors: {:?}", natter.first_error);
    let svg = loadgen::svg_plot::percentile_plot(&reports);
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
    Ok(())
}
