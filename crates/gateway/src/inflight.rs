//! kube-apiserver's max-in-flight limit (`--max-requests-inflight`,
//! `--max-mutating-requests-inflight`): at most so many reads and so many writes are served at
//! once; the next one gets a plain-text 429 with `Retry-After: 1` at once (no queue), as
//! apiserver's `WithMaxInFlightLimit` answers it. Long-running requests (watches, exec, attach,
//! port-forward, logs followed) are not counted, and members of `system:masters` are always
//! served, as there. Each Kubernetes target has an [`InFlight`] of its own (kept with its
//! forwarding service across reloads), as each kube-apiserver has its own limit; the gateway's
//! own endpoints share one more.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderValue, Response, StatusCode};
use kubegate_proxy::{InFlightSlot, ProxyBody};

/// The group kube-apiserver never refuses for lack of room.
const PRIVILEGED_GROUP: &str = "system:masters";

/// Verbs kube counts as reads; every other verb is a write.
const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

/// Requests being served now, reads and writes apart.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    reads: Arc<AtomicUsize>,
    writes: Arc<AtomicUsize>,
}

/// Whether a request was admitted.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Served; the slot (if the request is counted) must live as long as the response body
    /// ([`ProxyBody::holding`]), as kube-apiserver's is held until its handler has written
    /// the whole response.
    Admitted(Option<InFlightSlot>),
    /// Refused: the limit for its kind is reached.
    Full,
}

impl InFlight {
    /// Counts a request of `verb` against `reads_limit` or `writes_limit` (0: no limit).
    /// Long-running requests and privileged callers are admitted without a slot.
    pub(crate) fn admit(
        &self,
        verb: &str,
        long_running: bool,
        groups: &[String],
        (reads_limit, writes_limit): (usize, usize),
    ) -> Admission {
        let write = !READ_VERBS.contains(&verb);
        let (count, limit) = if write {
            (&self.writes, writes_limit)
        } else {
            (&self.reads, reads_limit)
        };
        if limit == 0 || long_running {
            return Admission::Admitted(None);
        }
        match InFlightSlot::try_take(count, limit) {
            Some(slot) => Admission::Admitted(Some(slot)),
            None if groups.iter().any(|g| g == PRIVILEGED_GROUP) => Admission::Admitted(None),
            None => Admission::Full,
        }
    }

    /// Whether a counted request still holds a slot of this budget.
    pub(crate) fn in_use(&self) -> bool {
        self.reads.load(Ordering::Relaxed) > 0 || self.writes.load(Ordering::Relaxed) > 0
    }
}

/// kube-apiserver's answer when the limit is reached: `http.Error`'s plain text, and
/// `Retry-After: 1`.
pub(crate) fn too_many_requests() -> Response<ProxyBody> {
    let mut res = kubegate_proxy::status::plain_text_response(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests, please try again later.\n".to_owned(),
    );
    res.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(a: &Admission) -> bool {
        matches!(a, Admission::Admitted(_))
    }

    #[test]
    fn reads_and_writes_are_counted_apart_and_slots_come_back() {
        let in_flight = Arc::new(InFlight::default());
        let limits = (2, 1);
        let first = in_flight.admit("get", false, &[], limits);
        let second = in_flight.admit("list", false, &[], limits);
        assert!(admitted(&first) && admitted(&second));
        assert!(matches!(
            in_flight.admit("watch", false, &[], limits),
            Admission::Full
        ));
        // Writes have their own limit.
        let write = in_flight.admit("create", false, &[], limits);
        assert!(admitted(&write));
        assert!(matches!(
            in_flight.admit("delete", false, &[], limits),
            Admission::Full
        ));
        drop(first);
        assert!(admitted(&in_flight.admit("get", false, &[], limits)));
    }

    #[test]
    fn long_running_requests_privileged_callers_and_no_limit_pass() {
        let in_flight = Arc::new(InFlight::default());
        let limits = (1, 1);
        let _held = in_flight.admit("get", false, &[], limits);
        assert!(matches!(
            in_flight.admit("get", false, &[], limits),
            Admission::Full
        ));
        assert!(matches!(
            in_flight.admit("watch", true, &[], limits),
            Admission::Admitted(None)
        ));
        let masters = ["system:masters".to_owned()];
        assert!(matches!(
            in_flight.admit("get", false, &masters, limits),
            Admission::Admitted(None)
        ));
        assert!(matches!(
            in_flight.admit("get", false, &[], (0, 0)),
            Admission::Admitted(None)
        ));
    }

    #[test]
    fn the_refusal_is_kubes_plain_text() {
        let res = too_many_requests();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()["retry-after"], "1");
        assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    }
}
