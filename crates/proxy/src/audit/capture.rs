//! Bounded copies of request and response bodies for `Request` and `RequestResponse` audit
//! events, taken while the bodies stream through: frames are forwarded as they arrive and
//! their bytes are copied into one buffer on the way, so forwarding never waits for it. A copy,
//! not handles to the frames' buffers: a peer sending a body in 1-byte frames would otherwise
//! make a handle per byte (tens of MiB of handles for a 1 MiB body), each keeping the read
//! buffer it points into alive. The copy holds at most the limit.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde_json::value::RawValue;

use crate::ext::ObjectRef;

/// Default bound on each recorded body; a larger body is left out of the event (with an
/// annotation saying so) rather than held in memory.
pub const DEFAULT_MAX_RECORDED_BODY: usize = 1024 * 1024;

/// Where a body copy stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Progress {
    Streaming,
    Complete,
    /// Left out of the event, with the reason for the annotation.
    Omitted(&'static str),
}

/// The copy of one body, shared between the body that streams it and the event that records it.
#[derive(Debug)]
pub(crate) struct Capture {
    body: BytesMut,
    len: usize,
    limit: usize,
    progress: Progress,
}

/// A shared [`Capture`].
pub(crate) type SharedCapture = Arc<Mutex<Capture>>;

impl Capture {
    pub(crate) fn shared(limit: usize) -> SharedCapture {
        Arc::new(Mutex::new(Capture {
            body: BytesMut::new(),
            len: 0,
            limit,
            progress: Progress::Streaming,
        }))
    }

    pub(crate) fn omitted(reason: &'static str) -> SharedCapture {
        let capture = Capture::shared(0);
        lock(&capture).omit(reason);
        capture
    }

    fn push(&mut self, data: &Bytes) {
        if self.progress != Progress::Streaming {
            return;
        }
        self.len = self.len.saturating_add(data.len());
        if self.len > self.limit {
            self.omit("larger than the audit body limit");
        } else {
            self.body.extend_from_slice(data);
        }
    }

    fn omit(&mut self, reason: &'static str) {
        self.body = BytesMut::new();
        self.progress = Progress::Omitted(reason);
    }

    fn finish(&mut self) {
        if self.progress == Progress::Streaming {
            self.progress = Progress::Complete;
        }
    }

    /// The recorded object, or why there is none (`Ok(None)`: an empty body, nothing to say).
    pub(crate) fn object(&self) -> Result<Option<Box<RawValue>>, &'static str> {
        match self.progress {
            Progress::Streaming => Err("the body did not finish"),
            Progress::Omitted(reason) => Err(reason),
            Progress::Complete if self.len == 0 => Ok(None),
            Progress::Complete => json_line_value(&self.body).map(Some).ok_or("not JSON"),
        }
    }
}

pub(crate) fn lock(capture: &SharedCapture) -> std::sync::MutexGuard<'_, Capture> {
    capture.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `bytes` as a JSON value that fits on one line: validated, and with whitespace outside
/// strings removed when the text spans lines (a pretty-printed body would otherwise break the
/// one-event-per-line log format). Key order and number spelling are kept as sent.
fn json_line_value(bytes: &[u8]) -> Option<Box<RawValue>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let value: &RawValue = serde_json::from_str(text).ok()?;
    let text = value.get();
    if !text.contains(['\n', '\r']) {
        return RawValue::from_string(text.to_owned()).ok();
    }
    let mut compact = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            compact.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            compact.push(c);
        }
    }
    RawValue::from_string(compact).ok()
}

/// Resources whose bodies carry credentials: recorded at `Metadata` level whatever the policy
/// says, so a secret never reaches the audit log.
///
/// Besides kube's own (`secrets`, `serviceaccounts/token`, token reviews and requests), the Loft
/// / vCluster Platform types of `spec/loft-api.md` that carry a key, a token or a client
/// certificate, whichever way they are read or written:
///
/// | group | resource | why |
/// |---|---|---|
/// | `storage.loft.sh` | `accesskeys` | `spec.key` is the bearer token itself |
/// | `management.loft.sh` | `ownedaccesskeys`, `resetaccesskeys` | inline the storage `AccessKey` spec, `key` included |
/// | `management.loft.sh` | `users/accesskeys`, `teams/accesskeys` | lists of a user's or team's access keys |
/// | `management.loft.sh` | `clusters/accesskey` | `ClusterAccessKey.accessKey`, the agent's key |
/// | `management.loft.sh` | `virtualclusterinstances/accesskey` | `VirtualClusterAccessKey.accessKey` |
/// | `management.loft.sh` | `virtualclusterinstances/kubeconfig` | a kubeconfig with a client certificate and key |
/// | `management.loft.sh` | `directclusterendpointtokens` | `status.token` |
/// | `management.loft.sh` | `selves` | `spec.accessKey`, a key to validate |
///
/// A subresource is matched on the resource it belongs to, so `users/accesskeys` is covered but
/// `users` (and `users/profile`) are not. `management.loft.sh` `accesskeys` is kept from before
/// although Loft serves no such top-level resource: matching a name that never occurs costs
/// nothing, and leaving it out could only let a body through.
pub fn has_secret_bodies(object: &ObjectRef) -> bool {
    matches!(
        (object.api_group(), object.resource(), object.subresource()),
        ("", "secrets", _)
            | ("", "serviceaccounts", "token")
            | ("authentication.k8s.io", "tokenreviews" | "tokenrequests", _)
            | ("storage.loft.sh", "accesskeys", _)
            | (
                "management.loft.sh",
                "directclusterendpointtokens"
                    | "ownedaccesskeys"
                    | "resetaccesskeys"
                    | "accesskeys"
                    | "selves",
                _,
            )
            | ("management.loft.sh", "users" | "teams", "accesskeys")
            | ("management.loft.sh", "clusters", "accesskey")
            | (
                "management.loft.sh",
                "virtualclusterinstances",
                "accesskey" | "kubeconfig"
            )
    )
}

pin_project! {
    /// A request body as the audit layer hands it on: the client's body, frame by frame, copied
    /// (up to a bound) when the request is audited at `Request` level or above.
    #[derive(Debug)]
    pub struct AuditBody<B> {
        #[pin]
        inner: B,
        capture: Option<SharedCapture>,
    }
}

impl<B> AuditBody<B> {
    /// Wraps `inner` without copying anything (what the layer does at `Metadata` level; also
    /// how code outside the layer builds requests for services inside it).
    pub fn new(inner: B) -> Self {
        AuditBody {
            inner,
            capture: None,
        }
    }

    pub(crate) fn with_capture(inner: B, capture: Option<SharedCapture>) -> Self {
        AuditBody { inner, capture }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: From<Bytes>> From<Bytes> for AuditBody<B> {
    fn from(b: Bytes) -> Self {
        AuditBody::new(B::from(b))
    }
}

impl<B: Body<Data = Bytes>> Body for AuditBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let res = this.inner.as_mut().poll_frame(cx);
        if let Some(capture) = this.capture.as_ref() {
            observe(capture, &res, this.inner.is_end_stream());
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Feeds one polled frame to a capture. `at_end` is the body's `is_end_stream()` after the
/// frame: hyper stops polling a body that says it has ended, so the terminating `None` may never
/// be seen.
pub(crate) fn observe<E>(
    capture: &SharedCapture,
    polled: &Poll<Option<Result<Frame<Bytes>, E>>>,
    at_end: bool,
) {
    match polled {
        Poll::Ready(Some(Ok(frame))) => {
            let mut capture = lock(capture);
            if let Some(data) = frame.data_ref() {
                capture.push(data);
            }
            if at_end {
                capture.finish();
            }
        }
        Poll::Ready(Some(Err(_))) => lock(capture).omit("the body failed"),
        Poll::Ready(None) => lock(capture).finish(),
        Poll::Pending => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn body(chunks: &[&'static str]) -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        StreamBody::new(futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
                .collect::<Vec<_>>(),
        ))
    }

    async fn record(chunks: &[&'static str], limit: usize) -> (Bytes, SharedCapture) {
        let capture = Capture::shared(limit);
        let forwarded = AuditBody::with_capture(body(chunks), Some(capture.clone()))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        (forwarded, capture)
    }

    #[tokio::test]
    async fn forwards_every_frame_and_records_the_object() {
        let (forwarded, capture) = record(
            &["{\"kind\":", "\"ConfigMap\",\"data\":{\"a\":\"1\"}}"],
            1024,
        )
        .await;
        assert_eq!(forwarded, "{\"kind\":\"ConfigMap\",\"data\":{\"a\":\"1\"}}");
        let object = lock(&capture).object().unwrap().unwrap();
        assert_eq!(
            object.get(),
            "{\"kind\":\"ConfigMap\",\"data\":{\"a\":\"1\"}}"
        );
    }

    #[tokio::test]
    async fn pretty_json_becomes_one_line_with_strings_untouched() {
        let (_, capture) = record(
            &["{\n  \"b\": \"x \\\" y\\n\",\n  \"a\": [1, 2]\n}\n"],
            1024,
        )
        .await;
        let object = lock(&capture).object().unwrap().unwrap();
        assert_eq!(object.get(), "{\"b\":\"x \\\" y\\n\",\"a\":[1,2]}");
    }

    /// A body in 1-byte frames is recorded in one buffer of about its size: the copy keeps no
    /// handle per frame.
    #[tokio::test]
    async fn a_body_in_one_byte_frames_costs_its_size() {
        let text: &'static str =
            Box::leak(format!("{{\"a\":\"{}\"}}", "x".repeat(64 * 1024)).into_boxed_str());
        let frames: Vec<&'static str> = (0..text.len()).map(|i| &text[i..=i]).collect();
        let (forwarded, capture) = record(&frames, 1024 * 1024).await;
        assert_eq!(forwarded, text);
        let capture = lock(&capture);
        assert_eq!(capture.object().unwrap().unwrap().get(), text);
        assert!(
            capture.body.capacity() <= 2 * text.len(),
            "{} bytes held for {}",
            capture.body.capacity(),
            text.len()
        );
    }

    #[tokio::test]
    async fn over_the_limit_is_forwarded_whole_but_not_recorded() {
        let (forwarded, capture) = record(&["{\"a\":\"0123456789\"", ",\"b\":1}"], 16).await;
        assert_eq!(forwarded.len(), 24);
        assert_eq!(
            lock(&capture).object().unwrap_err(),
            "larger than the audit body limit"
        );
    }

    #[tokio::test]
    async fn empty_bodies_record_nothing_and_non_json_says_so() {
        let (_, capture) = record(&[], 16).await;
        assert!(lock(&capture).object().unwrap().is_none());
        let (_, capture) = record(&["\u{0}\u{1}protobuf"], 64).await;
        assert_eq!(lock(&capture).object().unwrap_err(), "not JSON");
        let capture = Capture::shared(16);
        assert_eq!(
            lock(&capture).object().unwrap_err(),
            "the body did not finish"
        );
    }

    #[test]
    fn credential_resources_are_never_recorded() {
        // (group, resource, subresource, carries a credential); the Loft rows name the type of
        // spec/loft-api.md §2-3 they are.
        let cases: &[(&str, &str, &str, bool)] = &[
            ("", "secrets", "", true),
            ("", "serviceaccounts", "token", true),
            ("", "serviceaccounts", "", false),
            ("authentication.k8s.io", "tokenreviews", "", true),
            ("authentication.k8s.io", "tokenrequests", "", true),
            // storage.loft.sh/v1 AccessKey: spec.key is the bearer token.
            ("storage.loft.sh", "accesskeys", "", true),
            ("storage.loft.sh", "users", "", false),
            (
                "management.loft.sh",
                "directclusterendpointtokens",
                "",
                true,
            ),
            ("management.loft.sh", "ownedaccesskeys", "", true),
            ("management.loft.sh", "resetaccesskeys", "", true),
            ("management.loft.sh", "selves", "", true),
            // UserAccessKeys / TeamAccessKeys subresources.
            ("management.loft.sh", "users", "accesskeys", true),
            ("management.loft.sh", "teams", "accesskeys", true),
            ("management.loft.sh", "users", "", false),
            ("management.loft.sh", "users", "profile", false),
            ("management.loft.sh", "teams", "", false),
            // ClusterAccessKey, VirtualClusterAccessKey, the vcluster instance's kubeconfig.
            ("management.loft.sh", "clusters", "accesskey", true),
            ("management.loft.sh", "clusters", "", false),
            (
                "management.loft.sh",
                "virtualclusterinstances",
                "accesskey",
                true,
            ),
            (
                "management.loft.sh",
                "virtualclusterinstances",
                "kubeconfig",
                true,
            ),
            ("management.loft.sh", "virtualclusterinstances", "", false),
            (
                "management.loft.sh",
                "virtualclusterinstances",
                "log",
                false,
            ),
            // The same names in other groups are not Loft's.
            ("", "configmaps", "", false),
            ("apps", "secrets", "", false),
            ("", "accesskeys", "", false),
            ("example.com", "users", "accesskeys", false),
        ];
        for &(group, resource, sub, expected) in cases {
            let object = ObjectRef::new(resource, "", "", group, "", sub);
            assert_eq!(
                has_secret_bodies(&object),
                expected,
                "{group}/{resource}/{sub}"
            );
        }
    }
}
