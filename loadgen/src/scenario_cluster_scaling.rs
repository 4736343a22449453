//! The cluster-scaling scenario (issue 11's scaled-down capacity model): per shard count, a fresh 3-node R3 cluster with gateways and fanouts, its capacity, where the leaders sit, and each process's CPU.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::report::PhaseReport;
use crate::resources::ProcessUsage;
use crate::scenario_capacity::{CapacityOptions, CapacitySearch};
use crate::system_under_test::SystemUnderTest;

/// Streams of Natter's message log: `MESSAGES`, then `MESSAGES_1`, `MESSAGES_2`… (one per shard).
const LOG_STREAM_PREFIX: &str = subjects::MESSAGE_STREAM;

#[derive(Debug, Clone)]
pub struct ClusterScalingOptions {
    /// Each shard count gets its own fresh cluster and its own capacity search, in this order.
    pub shards: Vec<usize>,
    pub replicas: usize,
    pub gateways: usize,
    pub fanouts: usize,
    /// The search run for every shard count; `timetable.baseline` adds the raw-NATS search on the same cluster.
    pub capacity: CapacityOptions,
    /// `KEY=VALUE` for every role, before the shard and replica settings (which always win).
    pub role_environment: Vec<String>,
}

impl ClusterScalingOptions {
    /// Issue 11's shape: shards 1 and 3, R3, 3 gateways, 2 fanouts, 1,000 clients in 100 groups of 10;
    /// p99 delivery and ack ≤ 150 ms over 15 s probes, at most 6 probes per system and shard count.
    pub fn full() -> ClusterScalingOptions {
        let mut capacity = CapacityOptions::full();
        capacity.timetable.measure_seconds = 15.0;
        capacity.timetable.warmup_seconds = 3.0;
        capacity.timetable.baseline = true;
        capacity.ack_slo_p99_ms = Some(150.0);
        capacity.start_rate = 250.0;
        capacity.max_probes = 6;
        capacity.resolution = 0.15;
        ClusterScalingOptions { shards: vec![1, 3], replicas: 3, gateways: 3, fanouts: 2, capacity, role_environment: Vec::new() }
    }

    /// 50 clients, 1 s probes at 50 and 100 sends/s: checks the harness (clusters, placement, report), not the system.
    pub fn smoke() -> ClusterScalingOptions {
        let mut capacity = CapacityOptions::smoke();
        capacity.timetable.baseline = true;
        capacity.ack_slo_p99_ms = Some(capacity.slo_p99_ms);
        ClusterScalingOptions { capacity, ..ClusterScalingOptions::full() }
    }
}

/// Who led what: a stream (`consumer` = `None`) or a durable consumer, and the leader's server name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub stream: String,
    pub consumer: Option<String>,
    pub leader: Option<String>,
}

/// One shard count's run on its own cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardCountRun {
    pub shards: usize,
    /// Natter's search, then the baseline's when it ran.
    pub searches: Vec<CapacitySearch>,
    /// Per search, the most CPU (100 = one core) processes outside the run took during any of its
    /// probes: the box is shared, and a busy neighbour lowers one shard count's figure and not another's.
    #[serde(default)]
    pub others_cpu_percent_max: Vec<f64>,
    /// Leaders once the roles were up (before the groups were created) and after the last probe.
    pub placement_at_start: Vec<Placement>,
    pub placement_at_end: Vec<Placement>,
    /// CPU and RSS of every process during the highest passing Natter probe (empty when none passed).
    pub processes_at_capacity: Vec<ProcessUsage>,
    /// Appends per second to each stream during that probe: how the sends spread over the log's shards.
    pub stream_writes_at_capacity: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterScalingReport {
    pub replicas: usize,
    pub gateways: usize,
    pub fanouts: usize,
    pub slo_p99_ms: f64,
    pub ack_slo_p99_ms: Option<f64>,
    pub measure_seconds: f64,
    pub runs: Vec<ShardCountRun>,
}

/// For each shard count: a fresh cluster and system, the capacity search(es), the placement; every
/// probe's phase comes back labelled with its system and shard count.
pub async fn run_cluster_scaling(natter_binary: &Path, options: &ClusterScalingOptions) -> anyhow::Result<(Vec<PhaseReport>, ClusterScalingReport)> {
    let mut phases = Vec::new();
    let mut runs = Vec::new();
    for &shards in &options.shards {
        let mut environment = options.role_environment.clone();
        environment.push(format!("NATTER_MESSAGE_SHARDS={shards}"));
        environment.push(format!("NATTER_STREAM_REPLICAS={}", options.replicas));
        eprintln!("cluster-scaling: {shards} shard(s): starting a fresh 3-node cluster, redis-server, {} gateway(s) and {} fanout(s)", options.gateways, options.fanouts);
        let system = SystemUnderTest::start_on_cluster(natter_binary, options.gateways, options.fanouts, &environment).await?;
        let outcome = measure(&system, shards, options).await;
        if outcome.is_err() {
            eprintln!("the run failed; the roles' logs end with:\n{}", system.role_log_tails(20));
        }
        system.stop().await;
        let (mut shard_phases, run) = outcome?;
        phases.append(&mut shard_phases);
        runs.push(run);
    }
    let capacity = &options.capacity;
    let report = ClusterScalingReport {
        replicas: options.replicas,
        gateways: options.gateways,
        fanouts: options.fanouts,
        slo_p99_ms: capacity.slo_p99_ms,
        ack_slo_p99_ms: capacity.ack_slo_p99_ms,
        measure_seconds: capacity.timetable.measure_seconds,
        runs,
    };
    Ok((phases, report))
}

async fn measure(system: &SystemUnderTest, shards: usize, options: &ClusterScalingOptions) -> anyhow::Result<(Vec<PhaseReport>, ShardCountRun)> {
    let placement_at_start = placement(system).await?;
    let mut capacity = options.capacity.clone();
    capacity.timetable.baseline_layout = crate::baseline::BaselineLayout { shards, replicas: options.replicas };
    let (mut phases, found) = crate::scenario_capacity::run_capacity(&system.target, &capacity).await?;
    let placement_at_end = placement(system).await?;
    let mut searches = found.searches;
    let others_cpu_percent_max = searches
        .iter()
        .map(|search| {
            let others = phases.iter().filter(|phase| phase.system == search.system).flat_map(|phase| &phase.processes).filter(|process| process.name.starts_with("other processes"));
            others.map(|process| process.cpu_percent).fold(0.0, f64::max)
        })
        .collect();
    let label = |system: &str| format!("{system}, {shards} shard(s)");
    for search in &mut searches {
        search.system = label(&search.system);
        for probe in &mut search.probes {
            probe.system = label(&probe.system);
        }
    }
    let at_capacity = searches.first().and_then(|natter| natter.capacity_per_second).and_then(|rate| phases.iter().find(|phase| phase.system == "natter" && phase.rate_per_second == rate));
    let processes_at_capacity = at_capacity.map(|phase| phase.processes.clone()).unwrap_or_default();
    let stream_writes_at_capacity = at_capacity.map(|phase| phase.stream_writes_per_second.clone()).unwrap_or_default();
    for phase in &mut phases {
        phase.system = label(&phase.system);
    }
    Ok((phases, ShardCountRun { shards, searches, others_cpu_percent_max, placement_at_start, placement_at_end, processes_at_capacity, stream_writes_at_capacity }))
}

/// Every stream's and consumer's leader, merged from every node's view: a node lists only what it
/// holds a replica of, and an ephemeral consumer (a KV watch) has a single replica.
async fn placement(system: &SystemUnderTest) -> anyhow::Result<Vec<Placement>> {
    let cluster = system.cluster().ok_or_else(|| anyhow::anyhow!("cluster-scaling runs on a cluster"))?;
    let mut placement: Vec<Placement> = Vec::new();
    for node in 0..devservers::CLUSTER_SIZE {
        for (stream, consumer, leader) in cluster.leaders_seen_by(node).await? {
            match placement.iter_mut().find(|known| known.stream == stream && known.consumer == consumer) {
                Some(known) => known.leader = known.leader.take().or(leader),
                None => placement.push(Placement { stream, consumer, leader }),
            }
        }
    }
    placement.sort_by(|a, b| (&a.stream, &a.consumer).cmp(&(&b.stream, &b.consumer)));
    Ok(placement)
}

fn is_log_shard(stream: &str) -> bool {
    stream == LOG_STREAM_PREFIX || stream.strip_prefix(LOG_STREAM_PREFIX).and_then(|rest| rest.strip_prefix('_')).is_some_and(|shard| shard.parse::<usize>().is_ok())
}

/// `n1: 2, n2: 1, n3: 0` for the placements `wanted` keeps.
fn leaders_per_node(placement: &[Placement], wanted: impl Fn(&Placement) -> bool) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for entry in placement.iter().filter(|entry| wanted(entry)) {
        let leader = entry.leader.clone().unwrap_or_else(|| "none".to_owned());
        match counts.iter_mut().find(|(name, _)| *name == leader) {
            Some((_, count)) => *count += 1,
            None => counts.push((leader, 1)),
        }
    }
    counts.sort();
    counts.iter().map(|(name, count)| format!("{name}: {count}")).collect::<Vec<_>>().join(", ")
}

impl ClusterScalingReport {
    pub fn markdown(&self) -> String {
        let mut text = String::new();
        let ack = self.ack_slo_p99_ms.map(|ack| format!(" and p99 ack ≤ {ack} ms")).unwrap_or_default();
        let _ = writeln!(
            text,
            "Cluster scaling: 3 nats-server nodes, streams R{}, {} gateway(s), {} fanout(s), a fresh cluster per shard count. \
             Capacity = highest offered sends/s with p99 delivery (due time → `message` frame) ≤ {} ms{ack} over a {} s window. \
             Shard counts run one after another: when others' CPU differs between them, so may the figures.\n",
            self.replicas, self.gateways, self.fanouts, self.slo_p99_ms, self.measure_seconds
        );
        let _ = writeln!(text, "| system | shards | capacity sends/s | × first shard count | acks/s at capacity | first failing sends/s | resolved | probes | others' CPU % (max) |");
        let _ = writeln!(text, "|---|---:|---:|---:|---:|---:|---|---:|---:|");
        let first = |position: usize| self.runs.first().and_then(|run| run.searches.get(position)).and_then(|search| search.capacity_per_second);
        for run in &self.runs {
            for (position, search) in run.searches.iter().enumerate() {
                let capacity = search.capacity_per_second.map_or("below the lowest probe".to_owned(), |rate| format!("{rate:.0}"));
                let ratio = match (search.capacity_per_second, first(position)) {
                    (Some(rate), Some(first)) if first > 0.0 => format!("{:.2}×", rate / first),
                    _ => "—".to_owned(),
                };
                let acked = search.capacity_per_second.and_then(|rate| search.probes.iter().find(|probe| probe.passed && probe.rate_per_second == rate)).map_or("—".to_owned(), |probe| format!("{:.0}", probe.acks_per_second));
                let failing = search.first_failing_per_second.map_or("—".to_owned(), |rate| format!("{rate:.0}"));
                let others = run.others_cpu_percent_max.get(position).map_or("—".to_owned(), |percent| format!("{percent:.0}"));
                let _ = writeln!(text, "| {} | {} | {capacity} | {ratio} | {acked} | {failing} | {} | {} | {others} |", search.system, run.shards, if search.resolved { "yes" } else { "no" }, search.probes.len());
            }
        }
        let _ = writeln!(text, "\nLeaders per node after the last probe (log shards; every stream and consumer incl. KV buckets and the baseline's):\n");
        let _ = writeln!(text, "| shards | log shard leaders | all stream leaders | all consumer leaders | moved during the run |");
        let _ = writeln!(text, "|---:|---|---|---|---|");
        for run in &self.runs {
            let end = &run.placement_at_end;
            let moved: Vec<String> = run
                .placement_at_start
                .iter()
                .filter_map(|before| {
                    let after = end.iter().find(|after| after.stream == before.stream && after.consumer == before.consumer)?;
                    // A consumer made just before the first look may have had no leader yet: an election, not a move.
                    (before.leader.is_some() && after.leader != before.leader).then(|| format!("{}{} {}→{}", before.stream, before.consumer.as_deref().map(|name| format!("/{name}")).unwrap_or_default(), before.leader.as_deref().unwrap_or("none"), after.leader.as_deref().unwrap_or("none")))
                })
                .collect();
            let _ = writeln!(
                text,
                "| {} | {} | {} | {} | {} |",
                run.shards,
                leaders_per_node(end, |entry| entry.consumer.is_none() && is_log_shard(&entry.stream)),
                leaders_per_node(end, |entry| entry.consumer.is_none()),
                leaders_per_node(end, |entry| entry.consumer.is_some()),
                if moved.is_empty() { "no".to_owned() } else { moved.join(", ") }
            );
        }
        let _ = writeln!(text, "\nEvery leader after the last probe:\n");
        let _ = writeln!(text, "| shards | stream | consumer | leader |");
        let _ = writeln!(text, "|---:|---|---|---|");
        for run in &self.runs {
            for entry in &run.placement_at_end {
                let _ = writeln!(text, "| {} | {} | {} | {} |", run.shards, entry.stream, entry.consumer.as_deref().unwrap_or("—"), entry.leader.as_deref().unwrap_or("none"));
            }
        }
        let _ = writeln!(text, "\nAt Natter's capacity (its highest passing probe): CPU % (100 = one core) per process, and appends/s per log shard:\n");
        let _ = writeln!(text, "| shards | process | CPU % | RSS MiB |");
        let _ = writeln!(text, "|---:|---|---:|---:|");
        for run in &self.runs {
            for process in &run.processes_at_capacity {
                let _ = writeln!(text, "| {} | {} | {:.0} | {:.1} |", run.shards, process.name, process.cpu_percent, process.peak_rss_mib);
            }
            for (stream, rate) in run.stream_writes_at_capacity.iter().filter(|(stream, _)| is_log_shard(stream)) {
                let _ = writeln!(text, "| {} | appends/s to {stream} | {rate:.0} | |", run.shards);
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::{Placement, is_log_shard, leaders_per_node};

    #[test]
    fn counts_log_shard_leaders_per_node() {
        assert!(is_log_shard("MESSAGES") && is_log_shard("MESSAGES_2"));
        assert!(!is_log_shard("MESSAGES_X") && !is_log_shard("KV_msgindex") && !is_log_shard("BENCH"));
        let entry = |stream: &str, leader: Option<&str>| Placement { stream: stream.to_owned(), consumer: None, leader: leader.map(str::to_owned) };
        let placement = vec![entry("MESSAGES", Some("n2")), entry("MESSAGES_1", Some("n1")), entry("MESSAGES_2", Some("n2")), entry("KV_x", None)];
        assert_eq!(leaders_per_node(&placement, |entry| is_log_shard(&entry.stream)), "n1: 1, n2: 2");
        assert_eq!(leaders_per_node(&placement, |_| true), "n1: 1, n2: 2, none: 1");
    }
}
