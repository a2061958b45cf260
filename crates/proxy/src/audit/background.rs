//! [`BackgroundJsonLines`]: audit events as JSON lines, serialized and written by a thread of
//! its own so request tasks never wait for the disk.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use super::{AuditEvent, AuditSink};

/// Default bound on the events waiting for the writer thread, in (estimated) bytes of JSON:
/// 8 MiB.
pub const DEFAULT_QUEUE: usize = 8 << 20;
/// Past this many times the queue bound, events are dropped (and counted as lost) rather than
/// queued: what bounds the queue behind a writer stuck for good (a log pipe nobody reads),
/// besides the batch the writer holds (at most this much again, and its JSON). Only events of
/// requests admitted before the queue reached its bound get this far when the server refuses
/// new requests, and audits none, while [`BackgroundJsonLines::is_backlogged`].
const OVERFLOW_FACTOR: usize = 8;
/// The writer wakes at least this often while events are waiting...
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);
/// ...and at once when this much is waiting.
const BATCH: usize = 64 << 10;

#[derive(Default)]
struct State {
    /// Events not yet handed to the writer, in the order they were recorded. Boxed as the
    /// audit layer hands them over: queuing moves a pointer, not the ≈ 550-byte event.
    #[allow(clippy::vec_box)]
    queued: Vec<Box<AuditEvent>>,
    /// Their estimated size as JSON.
    queued_bytes: usize,
    /// Flush requests made / completed (a flush waits for its number to be completed).
    flush_requested: u64,
    flush_done: u64,
    /// The sink was dropped: finish and exit.
    closed: bool,
    /// The queue reached its bound: write now instead of lingering.
    full: bool,
    /// Events have been dropped since the writer last took the queue (logged once).
    dropping: bool,
    /// Events written, for the next recorder to free (see `record_owned`).
    #[allow(clippy::vec_box)]
    written: Vec<Box<AuditEvent>>,
}

struct Shared {
    state: Mutex<State>,
    /// The queue is at its bound: set by the recorder that reached it, cleared when the
    /// writer takes the queue. Read without the lock by [`BackgroundJsonLines::is_backlogged`].
    backlogged: AtomicBool,
    counts: Counts,
    /// Wakes the writer: events arrived (into an empty queue), a flush was asked, or closing.
    work: Condvar,
    /// Wakes recorders waiting for room and callers of `flush`.
    written: Condvar,
    limit: usize,
}

/// What the writer has done, as Prometheus counters ([`BackgroundJsonLines::register_metrics`]).
/// Counted by the writer thread a batch at a time, and by a recorder only when it had to wait:
/// the request path pays nothing for them.
#[derive(Default)]
struct Counts {
    /// Events taken from the queue to be written (whether the write then worked or not).
    events: Counter,
    /// Events lost because their write failed, or dropped because the queue overflowed.
    lost: Counter,
    /// Events queued past the queue's bound (the writer is behind).
    waits: Counter,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes each event as one JSON line (kube's `--audit-log-format=json`) from a writer thread.
///
/// Recording queues the event as it is (the box [`AuditLayer`](crate::AuditLayer) hands over
/// through [`AuditSink::record_owned`]; a copy when recorded by reference). The writer thread
/// takes the whole queue at once, serializes it, writes it and flushes the writer (group
/// commit), as kube-apiserver's batching audit backend does. So the request path does not
/// serialize the event: on a machine with more than one core that work runs beside the
/// requests, and it runs for a batch at a time with its code and tables warm. The written
/// events are freed by the next recorder, on its own thread, a batch at a time (memory
/// allocators free fastest on the thread that allocated).
///
/// The thread wakes every few milliseconds while events wait, or at once when 64 KiB of JSON
/// are waiting, so a busy gateway pays a thread wake-up per batch, not per event (on a small
/// machine a wake-up per event costs more than the write), and a slow disk slows the log, not
/// the requests.
///
/// Recording never blocks: a recorder runs on an async runtime's thread, where waiting for a
/// stalled writer (a full disk, a log pipe nobody reads) would stop every connection the
/// thread serves, health checks included. When the queue reaches its bound the sink says it is
/// [backlogged](Self::is_backlogged) until the writer takes the queue: a server should refuse
/// new requests meanwhile (the reference gateway answers them kube-apiserver's 429 before it
/// audits anything), so that only requests already admitted add to the queue. Past eight times
/// the bound, events are dropped, counted in `kubegate_audit_errors_total` and logged once.
/// Dropping the sink lets the thread finish and exit; [`flush`](Self::flush) waits until
/// everything recorded so far is written. Events are written in the order they were recorded.
pub struct BackgroundJsonLines {
    shared: Arc<Shared>,
}

impl fmt::Debug for BackgroundJsonLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundJsonLines")
            .finish_non_exhaustive()
    }
}

impl BackgroundJsonLines {
    /// Starts the writer thread over `writer`, with [`DEFAULT_QUEUE`] bytes of queue.
    pub fn spawn<W: Write + Send + 'static>(writer: W) -> std::io::Result<Self> {
        Self::with_queue(writer, DEFAULT_QUEUE)
    }

    /// Starts the writer thread with a queue bound of `bytes` (of estimated JSON).
    pub fn with_queue<W: Write + Send + 'static>(
        mut writer: W,
        bytes: usize,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            backlogged: AtomicBool::new(false),
            counts: Counts::default(),
            work: Condvar::new(),
            written: Condvar::new(),
            limit: bytes.max(1),
        });
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("kubegate-audit".into())
            .spawn(move || {
                let mut events = Vec::new();
                let mut batch = Vec::new();
                // Events lost to failing writes since writing last worked: a full disk fails
                // every batch, so the failure and the recovery are logged once each.
                let mut lost = 0usize;
                loop {
                    let (flush_to, closing) = {
                        let mut state = worker.lock();
                        loop {
                            let asked = state.flush_done != state.flush_requested
                                || state.closed
                                || state.full;
                            if asked || state.queued_bytes >= BATCH {
                                break;
                            }
                            if state.queued.is_empty() {
                                state = worker
                                    .work
                                    .wait(state)
                                    .unwrap_or_else(PoisonError::into_inner);
                            } else {
                                // Let a batch gather; events keep arriving without waking us.
                                let (next, timeout) = worker
                                    .work
                                    .wait_timeout(state, LINGER)
                                    .unwrap_or_else(PoisonError::into_inner);
                                state = next;
                                if timeout.timed_out() {
                                    break;
                                }
                            }
                        }
                        std::mem::swap(&mut events, &mut state.queued);
                        state.queued_bytes = 0;
                        state.full = false;
                        if std::mem::take(&mut state.dropping) {
                            tracing::warn!("the audit log's queue has room again");
                        }
                        worker.backlogged.store(false, Ordering::Relaxed);
                        (state.flush_requested, state.closed)
                    };
                    for event in &events {
                        event.write_json_line(&mut batch);
                    }
                    worker.counts.events.inc_by(events.len() as u64);
                    match writer.write_all(&batch).and_then(|()| writer.flush()) {
                        Ok(()) if lost > 0 => {
                            tracing::warn!(lost, "writing audit events works again; the events of the failed writes were lost");
                            lost = 0;
                        }
                        Ok(()) => {}
                        Err(e) => {
                            if lost == 0 {
                                tracing::error!(error = %e, "writing audit events failed; events are lost until a write works again");
                            }
                            lost += events.len();
                            worker.counts.lost.inc_by(events.len() as u64);
                        }
                    }
                    batch.clear();
                    let mut state = worker.lock();
                    state.flush_done = flush_to;
                    worker.written.notify_all();
                    // The events go back to the recorders to be freed: they were allocated on
                    // the request threads, where freeing them is a local free, not mimalloc's
                    // dearer cross-thread one (≈ 1,000 instructions per event less). A batch
                    // no recorder came for (the gateway went quiet) is freed here, so at most
                    // one written batch waits.
                    let unclaimed = if state.written.is_empty() {
                        std::mem::swap(&mut state.written, &mut events);
                        false
                    } else {
                        true
                    };
                    let done = closing && state.queued.is_empty();
                    drop(state);
                    if unclaimed {
                        events.clear();
                    }
                    if done {
                        return;
                    }
                }
            })?;
        Ok(BackgroundJsonLines { shared })
    }

    /// Registers the writer's counters in `registry`, as kube-apiserver counts its audit log
    /// (`apiserver_audit_event_total`, `apiserver_audit_error_total`):
    ///
    /// | metric | type | counts |
    /// |---|---|---|
    /// | `kubegate_audit_events` (`_total`) | counter | events the writer took to write |
    /// | `kubegate_audit_errors` (`_total`) | counter | events lost because their write failed (a full disk), or dropped past eight times the queue bound |
    /// | `kubegate_audit_queue_full` (`_total`) | counter | events queued past the queue bound (the disk is slower than the requests: the sink is backlogged) |
    ///
    /// The writer logs a failure once and its end once; `kubegate_audit_errors_total` is what
    /// an alert can watch between the two.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let counts = &self.shared.counts;
        registry.register(
            "kubegate_audit_events",
            "Audit events taken by the audit log's writer to be written",
            counts.events.clone(),
        );
        registry.register(
            "kubegate_audit_errors",
            "Audit events lost because writing them failed or the queue overflowed",
            counts.lost.clone(),
        );
        registry.register(
            "kubegate_audit_queue_full",
            "Audit events queued past the queue's bound while the writer was behind",
            counts.waits.clone(),
        );
    }

    /// Whether the queue has reached its bound and the writer has not taken it since: new
    /// requests should be refused (their events could only add to it). One relaxed atomic
    /// load.
    pub fn is_backlogged(&self) -> bool {
        self.shared.backlogged.load(Ordering::Relaxed)
    }

    /// Waits until every event recorded so far is written and the writer flushed. Blocks the
    /// calling thread: call it off the async workers (e.g. `spawn_blocking`) or at shutdown.
    pub fn flush(&self) {
        let mut state = self.shared.lock();
        state.flush_requested += 1;
        let target = state.flush_requested;
        self.shared.work.notify_one();
        while state.flush_done < target && !state.closed {
            state = self
                .shared
                .written
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for BackgroundJsonLines {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
    }
}

impl AuditSink for BackgroundJsonLines {
    fn record(&self, event: &AuditEvent) {
        self.record_owned(Box::new(event.clone()));
    }

    fn record_owned(&self, event: Box<AuditEvent>) {
        let size = event.estimated_json_len();
        let limit = self.shared.limit;
        let mut state = self.shared.lock();
        if !state.queued.is_empty() && state.queued_bytes >= limit {
            if state.queued_bytes >= limit.saturating_mul(OVERFLOW_FACTOR) {
                let first = !std::mem::replace(&mut state.dropping, true);
                drop(state);
                self.shared.counts.lost.inc();
                if first {
                    tracing::error!(
                        "the audit log's queue overflowed (its writer is stuck); audit events are dropped until it has room"
                    );
                }
                drop(event);
                return;
            }
            self.shared.counts.waits.inc();
        }
        let before = state.queued_bytes;
        let was_empty = state.queued.is_empty();
        state.queued.push(event);
        state.queued_bytes += size;
        let crossed_batch = before < BATCH && state.queued_bytes >= BATCH;
        let reached_bound = before < limit && state.queued_bytes >= limit;
        if reached_bound {
            // The writer writes at once instead of lingering; new requests are refused until
            // it has taken the queue.
            state.full = true;
            self.shared.backlogged.store(true, Ordering::Relaxed);
        }
        let written = std::mem::take(&mut state.written);
        drop(state);
        // Freed outside the lock, on this (the allocating) thread.
        drop(written);
        // The writer sleeps while nothing waits; after that it lingers on its own timer.
        if was_empty || crossed_batch || reached_bound {
            self.shared.work.notify_one();
        }
    }

    fn backlogged(&self) -> bool {
        self.is_backlogged()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose contents the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_recorded_owned_and_by_reference_are_written_in_order() {
        let out = Shared::default();
        // A bound whose overflow (eight times it) the 600 events stay under: they are
        // written in several batches (one per 64 KiB), none dropped.
        let sink = BackgroundJsonLines::with_queue(out.clone(), 128 << 10).unwrap();
        for i in 0..300 {
            // A long-running request's two stages: the first by reference (the layer keeps
            // the event), the second handed over.
            let mut event = crate::audit::tests::sample_event();
            event.audit_id = format!("{i}").into();
            event.stage = "ResponseStarted";
            sink.record(&event);
            event.stage = "ResponseComplete";
            sink.record_owned(Box::new(event));
        }
        sink.flush();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let seen: Vec<(String, String)> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["auditID"].as_str().unwrap().to_owned(),
                    v["stage"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = (0..300)
            .flat_map(|i| {
                ["ResponseStarted", "ResponseComplete"]
                    .map(|stage| (format!("{i}"), stage.to_owned()))
            })
            .collect();
        assert_eq!(seen, expected);
    }

    /// A writer that refuses its first `failures` writes, as a full disk does.
    struct FailingFirst {
        failures: usize,
        out: Shared,
    }
    impl Write for FailingFirst {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(std::io::Error::other("no space left on device"));
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The value of counter `name` in the registry's text form.
    fn counter(registry: &Registry, name: &str) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    #[test]
    fn written_and_lost_events_are_counted() {
        let out = Shared::default();
        let sink = BackgroundJsonLines::spawn(FailingFirst {
            failures: 1,
            out: out.clone(),
        })
        .unwrap();
        let mut registry = Registry::default();
        sink.register_metrics(&mut registry);
        // The first write is refused: the events of its batch (the first of the three, and
        // those that arrived while the writer lingered) are lost; the rest land.
        for _ in 0..3 {
            sink.record(&crate::audit::tests::sample_event());
        }
        sink.flush();
        let lost = counter(&registry, "kubegate_audit_errors_total");
        assert!((1..=3).contains(&lost), "{lost} events lost");
        for _ in 0..2 {
            sink.record(&crate::audit::tests::sample_event());
        }
        sink.flush();
        assert_eq!(counter(&registry, "kubegate_audit_events_total"), 5);
        assert_eq!(counter(&registry, "kubegate_audit_errors_total"), lost);
        assert_eq!(counter(&registry, "kubegate_audit_queue_full_total"), 0);
        let written = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(written.lines().count() as u64, 5 - lost);
    }

    /// A stalled writer never stalls a recorder (it runs on an async runtime's thread, which
    /// serves every connection): at the bound the sink says it is backlogged, past it events
    /// still queue (counted), past eight times the bound they are dropped (counted as lost).
    #[test]
    fn a_stalled_writer_never_blocks_a_recorder() {
        // A writer held shut until the test lets it go, behind a queue of one event.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        struct Held(Arc<(Mutex<bool>, Condvar)>);
        impl Write for Held {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (open, opened) = &*self.0;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = opened.wait(open).unwrap();
                }
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let event = crate::audit::tests::sample_event();
        let bound = event.estimated_json_len();
        let sink = Arc::new(BackgroundJsonLines::with_queue(Held(gate.clone()), bound).unwrap());
        let mut registry = Registry::default();
        sink.register_metrics(&mut registry);
        // The writer takes the first event and blocks in its write.
        sink.record(&event);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while counter(&registry, "kubegate_audit_events_total") < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never took the event"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!sink.is_backlogged(), "the writer took the queue");
        // The second reaches the bound, seven more queue past it (to eight times the bound),
        // the last two are dropped: all recorded without waiting for the writer.
        let (done, finished) = std::sync::mpsc::channel();
        let recorder = {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    sink.record(&event);
                    if i == 0 {
                        done.send(sink.is_backlogged()).unwrap();
                    }
                }
                done.send(true).unwrap();
            })
        };
        let timeout = std::time::Duration::from_secs(20);
        assert!(
            finished.recv_timeout(timeout).unwrap(),
            "backlogged at the bound"
        );
        assert!(
            finished.recv_timeout(timeout).is_ok(),
            "a recorder waited for the stalled writer"
        );
        recorder.join().unwrap();
        assert!(sink.is_backlogged());
        assert_eq!(counter(&registry, "kubegate_audit_queue_full_total"), 7);
        assert_eq!(counter(&registry, "kubegate_audit_errors_total"), 2);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        sink.flush();
        assert!(!sink.is_backlogged());
        assert_eq!(counter(&registry, "kubegate_audit_events_total"), 1 + 1 + 7);
    }

    #[test]
    fn the_queue_bound_counts_at_least_the_json_of_a_usual_event() {
        let event = crate::audit::tests::sample_event();
        let mut line = Vec::new();
        event.write_json_line(&mut line);
        assert!(
            event.estimated_json_len() >= line.len(),
            "{} < {}",
            event.estimated_json_len(),
            line.len()
        );
    }

    #[test]
    fn every_event_from_every_thread_is_written_once() {
        let out = Shared::default();
        // Room for them all within the overflow bound (eight times this), so none is
        // dropped, while threads keep crossing the bound itself.
        let sink = Arc::new(BackgroundJsonLines::with_queue(out.clone(), 256 << 10).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let mut event = crate::audit::tests::sample_event();
                        event.audit_id = format!("{t}-{i}").into();
                        sink.record(&event);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        sink.flush();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let ids: std::collections::BTreeSet<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["auditID"].to_string())
            .collect();
        assert_eq!(text.lines().count(), 2000);
        assert_eq!(ids.len(), 2000);
    }
}
