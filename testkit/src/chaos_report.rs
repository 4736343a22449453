//! What a chaos run's accounting found: acked, lost, duplicated and out-of-order messages, and the longest window of failing sends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use crate::chaos::{device_is_member, Conversation};
use crate::chaos_device::ChaosDevice;

/// What the accounting found; `ensure_nothing_lost` is the verdict.
#[derive(Debug, Default)]
pub struct ChaosReport {
    pub scenario: String,
    pub ran_for: Duration,
    pub acked: usize,
    /// Sends never acked before the give-up deadline: an availability failure, not a loss.
    pub abandoned: usize,
    pub stored: usize,
    pub lost_in_history: usize,
    /// Acked messages missing from a member device after its final sync (counted per device).
    pub lost_on_devices: usize,
    pub gaps_in_history: usize,
    pub duplicated_in_history: usize,
    pub duplicated_on_screen: u64,
    pub out_of_order: u64,
    pub longest_send_failure: Duration,
    pub failed_attempts: u64,
    pub failures_by_kind: BTreeMap<String, u64>,
    pub first_failure_of_kind: BTreeMap<String, String>,
    /// A few acked messages history does not hold as acked, to start an investigation from.
    pub lost_examples: Vec<String>,
    pub reconnects: u64,
    pub server_closes: BTreeMap<u16, u64>,
    /// (conversation, client_msg_id) of every acked send; the sender is the client_msg_id's prefix.
    pub acked_messages: Vec<(String, String)>,
}

impl ChaosReport {
    pub(crate) fn check_history(
        &mut self,
        conversation: &str,
        stored: &[(u64, String)],
        acked: &HashMap<(String, u64), String>,
    ) {
        self.gaps_in_history += stored
            .iter()
            .enumerate()
            .filter(|(index, (seq, _))| *seq != *index as u64 + 1)
            .count();
        let mut client_msg_ids = HashSet::new();
        self.duplicated_in_history += stored
            .iter()
            .filter(|(_, client_msg_id)| !client_msg_ids.insert(client_msg_id))
            .count();
        let by_seq: HashMap<u64, &String> = stored
            .iter()
            .map(|(seq, client_msg_id)| (*seq, client_msg_id))
            .collect();
        let mut lost: Vec<(u64, &String)> = acked
            .iter()
            .filter(|((acked_conversation, seq), client_msg_id)| {
                acked_conversation == conversation && by_seq.get(seq) != Some(client_msg_id)
            })
            .map(|((_, seq), client_msg_id)| (*seq, client_msg_id))
            .collect();
        lost.sort();
        self.lost_in_history += lost.len();
        for (seq, client_msg_id) in lost.into_iter().take(3) {
            let there = by_seq.get(&seq).map_or("nothing", |stored| stored.as_str());
            self.lost_examples.push(format!("{conversation} seq {seq}: acked {client_msg_id}, history has {there} (it holds {} messages)", stored.len()));
        }
    }

    pub(crate) fn check_screen(
        &mut self,
        device: &ChaosDevice,
        conversations: &[Conversation],
        acked: &HashMap<(String, u64), String>,
    ) {
        let screen = device.screen.lock().expect("screen lock");
        self.duplicated_on_screen += screen.duplicates;
        self.out_of_order += screen.out_of_order;
        for (code, count) in &screen.server_closes {
            *self.server_closes.entry(*code).or_default() += count;
        }
        let shown: HashSet<(&str, u64, &str)> = screen
            .shown
            .iter()
            .flat_map(|(conversation, frames)| {
                frames
                    .iter()
                    .map(move |(seq, id)| (conversation.as_str(), *seq, id.as_str()))
            })
            .collect();
        self.lost_on_devices += acked
            .iter()
            .filter(|((conversation, _), _)| {
                device_is_member(conversations, conversation, &device.user)
            })
            .filter(|((conversation, seq), client_msg_id)| {
                !shown.contains(&(conversation.as_str(), *seq, client_msg_id.as_str()))
            })
            .count();
    }

    /// Nothing acked lost, nothing shown twice or out of order, no gaps, every send eventually acked,
    /// and no failure was answered `internal`: a fault is a reason to retry, which `unavailable` says.
    pub fn ensure_nothing_lost(&self) -> anyhow::Result<()> {
        let clean = self.acked > 0
            && !self.failures_by_kind.contains_key("internal")
            && self.abandoned == 0
            && self.lost_in_history == 0
            && self.lost_on_devices == 0
            && self.gaps_in_history == 0
            && self.duplicated_in_history == 0
            && self.duplicated_on_screen == 0
            && self.out_of_order == 0;
        anyhow::ensure!(clean, "the chaos accounting failed:\n{self}");
        Ok(())
    }
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "chaos accounting: {} (ran {:.1} s)",
            self.scenario,
            self.ran_for.as_secs_f64()
        )?;
        writeln!(
            formatter,
            "  acked {}  stored {}  abandoned {}",
            self.acked, self.stored, self.abandoned
        )?;
        writeln!(
            formatter,
            "  lost {} (history {}, device screens {})",
            self.lost_in_history + self.lost_on_devices,
            self.lost_in_history,
            self.lost_on_devices
        )?;
        writeln!(
            formatter,
            "  duplicated {} (history {}, screens {})  out of order {}  gaps in history {}",
            self.duplicated_in_history as u64 + self.duplicated_on_screen,
            self.duplicated_in_history,
            self.duplicated_on_screen,
            self.out_of_order,
            self.gaps_in_history
        )?;
        writeln!(
            formatter,
            "  longest window of failing sends {:.2} s  failed attempts {} {:?}",
            self.longest_send_failure.as_secs_f64(),
            self.failed_attempts,
            self.failures_by_kind
        )?;
        for (kind, error) in &self.first_failure_of_kind {
            writeln!(formatter, "    first {kind}: {error}")?;
        }
        for example in &self.lost_examples {
            writeln!(formatter, "    lost: {example}")?;
        }
        write!(
            formatter,
            "  reconnects {}  server close codes {:?}",
            self.reconnects, self.server_closes
        )
    }
}
