//! The crash-loop guard: an input that kills the worker process (an abort, a segfault in a
//! native library, the kernel's out-of-memory killer) must cost at most a few restarts, not
//! a crash loop that freezes its partition.
//!
//! A panic is caught where it happens (the model thread, the event task); a dead process
//! cannot catch anything, so what it was doing has to be written down *before* it does it.
//! The guard keeps that record beside the committed position (Kafka: the offset commit's
//! metadata; locally: the checkpoint file), as a [`Mark`]:
//!
//! - a worker claims each partition it starts reading by committing its resume position
//!   marked `running`, and every later commit while running says `running`; the last commit
//!   of a clean shutdown (and of a partition handed over in a rebalance) says `clean`;
//! - a worker that resumes a partition whose mark says `running` knows its last owner died
//!   (**suspect** mode): it processes the partition's next `suspect_events` events **alone**,
//!   one at a time, and before each it commits the event's offset with an
//!   [`Attempt`] (`offset`, `count`) in the mark;
//! - if the process dies again, the next owner resumes at that very offset with the attempt
//!   in the mark: the count goes up by one; once an event has been attempted alone
//!   `max_attempts` times, it is not run again but dead-lettered as `poison_suspected`, with
//!   the count.
//!
//! So an event that kills the worker costs one crash in its batch, then `max_attempts`
//! crashes alone, then it is set aside and the partition moves on; the events around it are
//! processed (at least once) as usual. An unclean exit that was not the input's doing (a
//! node lost, a SIGKILL) only costs a slow start: the events after it are each attempted
//! once, succeed, and the partition returns to normal batches.
//!
//! This module is the pure part: the mark's text form and the per-partition decisions. The
//! pipeline waits, writes the marks and routes the refused events.

use std::fmt;

/// Version prefix of a mark's text form; metadata without it is not a mark.
const PREFIX: &str = "fusionstream/1";

/// An event attempted alone after an unclean exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Its offset.
    pub offset: u64,
    /// How many times it has been started alone (this start included).
    pub count: u32,
}

/// What the guard stores with a committed position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The owner stopped cleanly (or handed the partition over).
    pub clean: bool,
    /// The event at the committed position is being attempted alone.
    pub attempt: Option<Attempt>,
}

impl Mark {
    /// The mark of a commit made while running.
    pub const RUNNING: Mark = Mark {
        clean: false,
        attempt: None,
    };

    /// Text form: `fusionstream/1 running`, `fusionstream/1 clean`,
    /// `fusionstream/1 running attempt=<offset>/<count>`.
    pub fn encode(&self) -> String {
        self.to_string()
    }

    /// Parse the text form; `None` for anything else (metadata written by other tools, an
    /// older format): such a position resumes in normal mode.
    pub fn decode(s: &str) -> Option<Mark> {
        let mut words = s.split(' ');
        if words.next()? != PREFIX {
            return None;
        }
        let clean = match words.next()? {
            "clean" => true,
            "running" => false,
            _ => return None,
        };
        let attempt = match words.next() {
            None => None,
            Some(w) => {
                let (offset, count) = w.strip_prefix("attempt=")?.split_once('/')?;
                Some(Attempt {
                    offset: offset.parse().ok()?,
                    count: count.parse().ok()?,
                })
            }
        };
        if words.next().is_some() {
            return None;
        }
        Some(Mark { clean, attempt })
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.clean { "clean" } else { "running" };
        write!(f, "{PREFIX} {state}")?;
        if let Some(a) = self.attempt {
            write!(f, " attempt={}/{}", a.offset, a.count)?;
        }
        Ok(())
    }
}

/// The guard's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSettings {
    /// Events processed alone after an unclean exit (per partition).
    pub suspect_events: u32,
    /// Starts alone that an event may take down before it is refused.
    pub max_attempts: u32,
}

/// What to do with the next event of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Process it as usual.
    Run,
    /// Process it alone: once nothing else of the partition is in flight, commit its offset
    /// with this attempt in the mark, then run it.
    RunAlone(Attempt),
    /// Do not run it: it was started alone `attempts` times and the worker died each time.
    Refuse {
        /// Starts alone that ended with the process.
        attempts: u32,
    },
}

/// One partition's guard state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionGuard {
    /// Batches as usual.
    Normal,
    /// After an unclean exit: events one at a time.
    Suspect {
        /// Events still to take alone.
        left: u32,
        /// The latest attempt (from the stored mark, then this worker's own).
        attempt: Option<Attempt>,
    },
}

impl PartitionGuard {
    /// The state of a partition resumed with `mark` stored at its committed position.
    pub fn resume(mark: Option<Mark>, s: &GuardSettings) -> Self {
        match mark {
            Some(m) if !m.clean && s.suspect_events > 0 => Self::Suspect {
                left: s.suspect_events,
                attempt: m.attempt,
            },
            _ => Self::Normal,
        }
    }

    /// Whether events are being taken one at a time.
    pub fn is_suspect(&self) -> bool {
        matches!(self, Self::Suspect { .. })
    }

    /// Decide for the partition's next event, at `offset` (offsets come in increasing
    /// order).
    pub fn admit(&mut self, offset: u64, s: &GuardSettings) -> Admit {
        let Self::Suspect { left, attempt } = self else {
            return Admit::Run;
        };
        if *left == 0 {
            *self = Self::Normal;
            return Admit::Run;
        }
        *left -= 1;
        let before = match attempt {
            Some(a) if a.offset == offset => a.count,
            _ => 0,
        };
        if before >= s.max_attempts {
            // Keep the attempt: until the refusal is acknowledged, a commit of this offset
            // still carries it, so a crash meanwhile refuses it again.
            *attempt = Some(Attempt {
                offset,
                count: before,
            });
            return Admit::Refuse { attempts: before };
        }
        let a = Attempt {
            offset,
            count: before + 1,
        };
        *attempt = Some(a);
        Admit::RunAlone(a)
    }

    /// The mark a commit of `next` (the next offset to read) carries: the attempt when it
    /// is the event at `next` (still unfinished), and whether this is a clean stop.
    pub fn mark_for(&self, next: u64, clean: bool) -> Mark {
        let attempt = match self {
            Self::Suspect {
                attempt: Some(a), ..
            } if a.offset == next => Some(*a),
            _ => None,
        };
        Mark { clean, attempt }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: GuardSettings = GuardSettings {
        suspect_events: 4,
        max_attempts: 2,
    };

    #[test]
    fn marks_round_trip_and_foreign_metadata_is_no_mark() {
        for m in [
            Mark::RUNNING,
            Mark {
                clean: true,
                attempt: None,
            },
            Mark {
                clean: false,
                attempt: Some(Attempt {
                    offset: 1 << 40,
                    count: 3,
                }),
            },
        ] {
            assert_eq!(Mark::decode(&m.encode()), Some(m), "{m}");
        }
        assert_eq!(Mark::RUNNING.encode(), "fusionstream/1 running");
        for s in [
            "",
            "fusionstream/1",
            "fusionstream/2 running",
            "fusionstream/1 dirty",
            "fusionstream/1 running attempt=5",
            "fusionstream/1 running attempt=x/1",
            "fusionstream/1 running attempt=5/1 extra",
            "committed by kafka-consumer-groups",
        ] {
            assert_eq!(Mark::decode(s), None, "{s:?}");
        }
    }

    #[test]
    fn a_clean_or_unknown_mark_resumes_in_normal_mode() {
        for m in [
            None,
            Some(Mark {
                clean: true,
                attempt: None,
            }),
        ] {
            let mut g = PartitionGuard::resume(m, &S);
            assert_eq!(g.admit(7, &S), Admit::Run);
            assert_eq!(g.mark_for(7, false), Mark::RUNNING);
        }
        let off = GuardSettings {
            suspect_events: 0,
            ..S
        };
        assert!(!PartitionGuard::resume(Some(Mark::RUNNING), &off).is_suspect());
    }

    #[test]
    fn after_an_unclean_exit_the_next_events_run_alone_then_normal() {
        let mut g = PartitionGuard::resume(Some(Mark::RUNNING), &S);
        for o in 10..14 {
            let a = Attempt {
                offset: o,
                count: 1,
            };
            assert_eq!(g.admit(o, &S), Admit::RunAlone(a));
            assert_eq!(
                g.mark_for(o, false).attempt,
                Some(a),
                "attempt committed first"
            );
            assert_eq!(g.mark_for(o + 1, false), Mark::RUNNING, "done: no attempt");
        }
        assert_eq!(g.admit(14, &S), Admit::Run);
        assert!(!g.is_suspect());
    }

    /// The whole loop: the event at 20 kills the process whenever it runs. Crash, resume
    /// from the stored mark, crash again… until it is refused.
    #[test]
    fn an_event_that_kills_the_process_is_refused_after_max_attempts() {
        let mut stored = Mark::RUNNING; // the crash in a batch left a running mark at 20
        let mut crashes_alone = 0;
        loop {
            let mut g = PartitionGuard::resume(Some(stored), &S);
            match g.admit(20, &S) {
                Admit::RunAlone(a) => {
                    stored = g.mark_for(20, false); // committed before the run…
                    assert_eq!(stored.attempt, Some(a));
                    crashes_alone += 1; // …which kills the process
                }
                Admit::Refuse { attempts } => {
                    assert_eq!(attempts, 2);
                    // Until its dead letter is acknowledged a commit of 20 keeps the count.
                    assert_eq!(g.mark_for(20, false).attempt.map(|a| a.count), Some(2));
                    assert_eq!(
                        g.admit(21, &S),
                        Admit::RunAlone(Attempt {
                            offset: 21,
                            count: 1
                        })
                    );
                    break;
                }
                Admit::Run => panic!("suspect mode must not batch"),
            }
        }
        assert_eq!(crashes_alone, S.max_attempts);
    }

    proptest! {
        /// A partition resumed at 100 with any stored attempt (a stored attempt is at the
        /// committed offset, or stale behind it): the event at 100 is refused exactly when
        /// it has been started alone `max_attempts` times before, every other event of the
        /// window runs alone once, and suspect mode lasts exactly its window.
        #[test]
        fn refusals_follow_the_stored_count(
            count in 0u32..5, at in 0u64..3, window in 1u32..6, max in 1u32..4,
        ) {
            let s = GuardSettings { suspect_events: window, max_attempts: max };
            let stored = Mark { clean: false, attempt: Some(Attempt { offset: 98 + at, count }) };
            let mut g = PartitionGuard::resume(Some(stored), &s);
            let mut alone = 0;
            for o in 100..120u64 {
                match g.admit(o, &s) {
                    Admit::Refuse { attempts } => {
                        prop_assert_eq!((o, at), (100, 2));
                        prop_assert!(count >= max);
                        prop_assert_eq!(attempts, count);
                        alone += 1;
                    }
                    Admit::RunAlone(a) => {
                        let expect = if o == 100 && at == 2 { count + 1 } else { 1 };
                        prop_assert_eq!(a.count, expect);
                        prop_assert!(a.count <= max);
                        alone += 1;
                    }
                    Admit::Run => {}
                }
            }
            prop_assert_eq!(alone, window.min(20));
        }
    }
}
