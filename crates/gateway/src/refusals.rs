//! Refusals of callers nobody has authenticated: each one counted, at most a few a second logged.
//!
//! Anyone who reaches the port can be refused as often as they can send requests: a bad
//! token, a wrong password, a foreign `Origin`. A log line for each would let them fill the
//! disk, or bury the lines an operator needs, at the gateway's full request rate. So these
//! lines share a budget of [`LINES_PER_SECOND`]; past it they are counted, not written, and the
//! next line written after a second that dropped some says how many. The metric
//! `kubegate_refusals_total{kind}` counts every refusal, logged or not.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Log lines of refusals written at most per second (all kinds together).
pub(crate) const LINES_PER_SECOND: u32 = 20;

/// What was refused: the `kind` label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Refused {
    /// A request's credentials were not accepted (401), or none were sent where one is needed;
    /// or a key `POST selves` was asked to describe was not.
    authentication,
    /// A login (`/auth/password/login`, `/auth/login`) was refused or failed.
    login,
    /// A session lookup or logout found no valid session, or came from a foreign origin.
    session,
    /// A request arrived while the audit log's writer was behind (its queue at its bound):
    /// answered kube's 429 before anything was audited.
    audit_backlog,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    kind: Refused,
}

/// Refusals counted, and the log budget they share.
#[derive(Debug)]
pub(crate) struct Refusals {
    counts: Family<Labels, Counter>,
    budget: Mutex<Budget>,
}

/// The current one-second window of the log budget.
#[derive(Debug, Default)]
struct Budget {
    /// When the window began; `None` before the first refusal.
    started: Option<Instant>,
    /// Lines written in it.
    logged: u32,
    /// Lines not written since a line last was.
    dropped: u64,
}

/// Whether a refusal's line may be written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Write it; `dropped` lines were not written since the last one that was.
    Log {
        /// Lines dropped before this one.
        dropped: u64,
    },
    /// The second's budget is spent.
    Drop,
}

impl Refusals {
    /// Registers `kubegate_refusals_total` in `registry`.
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let counts = Family::default();
        registry.register(
            "kubegate_refusals",
            "Refused callers nobody authenticated, by what was refused (logged at a bounded rate)",
            counts.clone(),
        );
        Refusals {
            counts,
            budget: Mutex::default(),
        }
    }

    /// Counts one refusal of `kind`; `true` when its log line may be written. When earlier
    /// lines were dropped, says how many in a line of its own first.
    pub(crate) fn count(&self, kind: Refused) -> bool {
        self.counts.get_or_create(&Labels { kind }).inc();
        match self.admit(Instant::now()) {
            Admission::Drop => false,
            Admission::Log { dropped: 0 } => true,
            Admission::Log { dropped } => {
                tracing::info!(
                    dropped,
                    "refusals not logged: more than {LINES_PER_SECOND} a second \
                     (kubegate_refusals_total counts them all)"
                );
                true
            }
        }
    }

    /// The budget's answer for a line at `now`.
    pub(crate) fn admit(&self, now: Instant) -> Admission {
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = budget
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= Duration::from_secs(1));
        if fresh {
            budget.started = Some(now);
            budget.logged = 0;
        }
        if budget.logged >= LINES_PER_SECOND {
            budget.dropped += 1;
            return Admission::Drop;
        }
        budget.logged += 1;
        Admission::Log {
            dropped: std::mem::take(&mut budget.dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_logs_its_budget_and_the_next_says_what_it_dropped() {
        let refusals = Refusals::new(&mut Registry::default());
        let start = Instant::now();
        for i in 0..LINES_PER_SECOND {
            assert_eq!(
                refusals.admit(start + Duration::from_millis(u64::from(i))),
                Admission::Log { dropped: 0 }
            );
        }
        for _ in 0..5 {
            assert_eq!(
                refusals.admit(start + Duration::from_millis(999)),
                Admission::Drop
            );
        }
        // A new second: its first line reports the five, the next none.
        let next = start + Duration::from_secs(1);
        assert_eq!(refusals.admit(next), Admission::Log { dropped: 5 });
        assert_eq!(refusals.admit(next), Admission::Log { dropped: 0 });
        // A quiet spell of any length starts afresh.
        let later = next + Duration::from_secs(3600);
        for _ in 0..LINES_PER_SECOND {
            assert_eq!(refusals.admit(later), Admission::Log { dropped: 0 });
        }
        assert_eq!(refusals.admit(later), Admission::Drop);
    }

    #[test]
    fn every_refusal_is_counted_logged_or_not() {
        let mut registry = Registry::default();
        let refusals = Refusals::new(&mut registry);
        let logged = (0..3 * LINES_PER_SECOND)
            .filter(|_| refusals.count(Refused::authentication))
            .count();
        refusals.count(Refused::login);
        assert!(logged < 3 * LINES_PER_SECOND as usize, "{logged} logged");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(&format!(
                "kubegate_refusals_total{{kind=\"authentication\"}} {}",
                3 * LINES_PER_SECOND
            )),
            "{text}"
        );
        assert!(
            text.contains("kubegate_refusals_total{kind=\"login\"} 1"),
            "{text}"
        );
    }
}
