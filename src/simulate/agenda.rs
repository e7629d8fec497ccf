//! The agenda: future events (job completions, boots, shutdowns, checks) in one binary heap,
//! ordered by time, then rank, then insertion, so a seed always replays the same run.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// The rank of an arrival, which the engine takes from the trace rather than the heap.
pub(super) const ARRIVAL_RANK: u8 = 1;

/// What happens at an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A job's service ends (stale if its instance was stopped meanwhile).
    JobDone {
        /// The instance's index.
        instance: usize,
        /// The job's number.
        job: u64,
    },
    /// An instance finished booting (stale if it was terminated first).
    Booted(usize),
    /// An instance finished shutting down.
    Gone(usize),
    /// The controller's check.
    Tick,
}

impl Kind {
    /// Order at equal times: fleet changes, then arrivals ([`ARRIVAL_RANK`], kept outside the
    /// heap), then the check, so a check sees every job that arrived at its instant (the
    /// spike's 100 at once) and every slot freed at it.
    pub fn rank(&self) -> u8 {
        match self {
            Kind::Tick => 2,
            _ => 0,
        }
    }
}

#[derive(Debug)]
struct Event {
    t: f64,
    /// Insertion order: equal-time events of one rank run in the order they were scheduled.
    seq: u64,
    kind: Kind,
}

impl Ord for Event {
    /// Reversed, so `BinaryHeap` (a max-heap) pops the earliest event.
    fn cmp(&self, other: &Self) -> Ordering {
        other.t.total_cmp(&self.t).then(other.kind.rank().cmp(&self.kind.rank())).then(other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Event {}

/// The events still to come.
#[derive(Debug, Default)]
pub(super) struct Agenda {
    heap: BinaryHeap<Event>,
    seq: u64,
}

impl Agenda {
    /// Schedules `kind` at `t`.
    pub fn at(&mut self, t: f64, kind: Kind) {
        self.seq += 1;
        self.heap.push(Event { t, seq: self.seq, kind });
    }

    /// The time and rank of the next event.
    pub fn peek(&self) -> Option<(f64, u8)> {
        self.heap.peek().map(|e| (e.t, e.kind.rank()))
    }

    /// Takes the next event.
    pub fn pop(&mut self) -> Option<(f64, Kind)> {
        self.heap.pop().map(|e| (e.t, e.kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_then_rank_then_insertion() {
        let mut agenda = Agenda::default();
        agenda.at(5.0, Kind::Tick);
        agenda.at(5.0, Kind::Gone(2));
        agenda.at(1.0, Kind::Booted(1));
        agenda.at(5.0, Kind::JobDone { instance: 0, job: 9 });
        let order: Vec<(f64, Kind)> = std::iter::from_fn(|| agenda.pop()).collect();
        assert_eq!(
            order,
            [
                (1.0, Kind::Booted(1)),
                (5.0, Kind::Gone(2)),
                (5.0, Kind::JobDone { instance: 0, job: 9 }),
                (5.0, Kind::Tick)
            ]
        );
        assert!(Kind::Tick.rank() > ARRIVAL_RANK && Kind::Booted(0).rank() < ARRIVAL_RANK);
    }
}
