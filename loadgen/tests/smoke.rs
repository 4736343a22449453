//! The load generator's smoke runs against an in-process Natter (testkit), one per scenario, so the harness cannot rot unnoticed.

use std::time::Duration;

use loadgen::scenario_capacity::{CapacityOptions, run_capacity};
use loadgen::scenario_connections::{ConnectionsOptions, run_connections};
use loadgen::scenario_large_group::{LargeGroupOptions, run_large_group};
use loadgen::scenario_latency::{LatencyOptions, WorkerMode, run_latency};
use loadgen::system_under_test::Target;

/// The in-process system as a load-generator target (no pids: its gateways run in this test process).
fn target_of(system: &testkit::TestSystem, gateways: usize) -> anyhow::Result<Target> {
    let gateways = (0..gateways).map(|gateway| system.http_url(gateway).trim_start_matches("http://").parse()).collect::<Result<Vec<_>, _>>()?;
    Ok(Target { gateways, nats_url: system.nats.client_urls(), jwt_secret: system.gateway_config().jwt.secret.clone(), processes: Vec::new() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_run_delivers_and_measures_natter_and_the_baseline() -> anyhow::Result<()> {
    let system = testkit::TestSystem::start().await?;
    let gateway = system.http_url(0).trim_start_matches("http://").parse()?;
    let target = Target { gateways: vec![gateway], nats_url: system.nats.client_urls(), jwt_secret: system.gateway_config().jwt.secret.clone(), processes: Vec::new() };
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_smoke_probes_rates_and_finds_an_answer() -> anyhow::Result<()> {
    let system = testkit::TestSystem::start().await?;
    let target = target_of(&system, 1)?;
    let options = CapacityOptions::smoke();

    let (phases, capacity) = tokio::time::timeout(Duration::from_secs(25), run_capacity(&target, &options)).await??;

    let natter = &capacity.searches[0];
    assert_eq!(natter.system, "natter");
    // 50 sends/s then 100 (the smoke's maximum) among 50 clients: both pass on any box, so the answer is the maximum.
    assert_eq!(natter.probes.iter().map(|probe| probe.rate_per_second).collect::<Vec<_>>(), vec![50.0, 100.0], "{capacity:#?}");
    assert!(natter.probes.iter().all(|probe| probe.passed), "{}", capacity.markdown());
    assert_eq!(natter.capacity_per_second, Some(100.0));
    assert_eq!(phases.len(), 2);
    for phase in &phases {
        assert!(phase.deliveries > 0 && phase.missing_deliveries == 0 && phase.errors == 0, "{phase:#?}");
        assert_eq!(phase.ack_ms.count, phase.measured_sends, "every send is acked: {phase:#?}");
    }
    assert!(capacity.markdown().contains("| natter | 100 |"), "{}", capacity.markdown());

    // An SLO no system can meet: the first probe is given up within a second or two, not run to its end.
    let mut hopeless = CapacityOptions::smoke();
    hopeless.slo_p99_ms = 0.001;
    hopeless.timetable.measure_seconds = 30.0;
    hopeless.max_probes = 1;
    let started = std::time::Instant::now();
    let (_, capacity) = tokio::time::timeout(Duration::from_secs(20), run_capacity(&target, &hopeless)).await??;
    let probe = &capacity.searches[0].probes[0];
    assert!(!probe.passed && probe.verdict.starts_with("stopped early"), "{}", capacity.markdown());
    assert_eq!(capacity.searches[0].capacity_per_second, None);
    assert!(started.elapsed() < Duration::from_secs(15), "the hopeless probe ran {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_group_smoke_delivers_to_every_member_through_natter_and_the_baseline() -> anyhow::Result<()> {
    let system = testkit::TestSystem::start().await?;
    let target = target_of(&system, 1)?;
    let mut options = LargeGroupOptions::smoke();
    options.timetable.worker_mode = WorkerMode::InProcess;

    let (phases, large_group) = tokio::time::timeout(Duration::from_secs(25), run_large_group(&target, &options)).await??;

    assert_eq!(phases.iter().map(|phase| phase.system.as_str()).collect::<Vec<_>>(), vec!["natter", "baseline"]);
    for phase in &phases {
        // 40 sends in the window, each to the 39 other members (30 of whom joined after the group was created).
        assert_eq!(phase.expected_deliveries, phase.measured_sends * 39, "{phase:#?}");
        assert!(phase.deliveries > 0, "{} delivered nothing: {phase:#?}", phase.system);
        assert_eq!(phase.missing_deliveries, 0, "{} lost deliveries: {phase:#?}", phase.system);
        assert_eq!(phase.errors, 0, "{} errors: {:?}", phase.system, phase.first_error);
        assert!(phase.latency_ms.p99_9 >= phase.latency_ms.p99 && phase.latency_ms.p50 > 0.0, "{phase:#?}");
    }
    assert!(large_group.natter.is_some() && large_group.baseline.is_some());
    assert!(large_group.markdown(&phases).contains("One group of 40 members"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_smoke_holds_idle_connections_over_two_gateways_and_each_answers() -> anyhow::Result<()> {
    let system = testkit::TestSystem::builder().gateways(2).start().await?;
    let target = target_of(&system, 2)?;
    let options = ConnectionsOptions::smoke();

    let report = tokio::time::timeout(Duration::from_secs(25), run_connections(&target, &options)).await??;

    assert_eq!(report.connected, 200, "{}", report.markdown());
    assert_eq!(report.failed, 0, "{}", report.markdown());
    assert_eq!(report.worker_processes, 2, "100 per worker at most");
    // Every connection is authenticated and alive: it answered a `ping` frame with its `pong`.
    assert_eq!(report.answered_ping, 200, "{}", report.markdown());
    assert_eq!((report.silent, report.dropped), (0, 0), "{}", report.markdown());
    assert_eq!(report.gateways.len(), 2);
    Ok(())
}

#[tokio::test]
async fn soak_smoke_churns_connections_and_accounts_for_every_message() -> anyhow::Result<()> {
    let system = testkit::TestSystem::start().await?;
    let mut target = target_of(&system, 1)?;
    // In process, the gateway is this test's own process: its memory and files are what is sampled.
    target.processes = vec![("test process (gateway in-process)".to_owned(), std::process::id()), ("nats-server".to_owned(), system.nats.server().pid())];
    let options = loadgen::scenario_soak::SoakOptions { population: loadgen::plan::Population { groups: 2, group_size: 5 }, cycles: 4 };
    let report = loadgen::scenario_soak::run_soak(&target, &options).await?;
    assert_eq!(report.messages_sent, 40);
    assert_eq!(report.messages_missing, 0, "every message is held after the final sync");
    assert_eq!(report.samples.len(), 4);
    assert!(report.trends.iter().all(|trend| trend.max_rss_mib > 0.0 && trend.max_open_files > 0), "{:?}", report.trends);
    assert!(loadgen::scenario_soak::summary_markdown(&report).contains("0 missing"));
    Ok(())
}
