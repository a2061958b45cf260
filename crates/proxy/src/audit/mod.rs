//! [`AuditLayer`]: one `audit.k8s.io/v1` Event per request, handed to an [`AuditSink`], and the
//! `Audit-ID` header on every response.
//!
//! Stages follow kube-apiserver: long-running requests ([`LongRunning`]) emit `ResponseStarted`
//! when the response head is ready and `ResponseComplete` when the body ends; others emit only
//! `ResponseComplete`, when the body ends (or is dropped because the client went away). A
//! request dropped before any response (the client went away while the upstream was still
//! deciding) is recorded too, as kube-apiserver records it: status 200, message
//! `Connection closed early`.
//!
//! Levels follow audit.k8s.io/v1 too ([`AuditLevel`]): the layer's default, or an [`AuditLevel`]
//! request extension set by an outer layer (the gateway sets one per target). At `Request` and
//! `RequestResponse` the bodies are copied as they stream through — never buffered in front of
//! the upstream or the client — up to a bound, and recorded as `requestObject` /
//! `responseObject` when they are JSON. Bodies are never recorded for long-running requests
//! (watch, exec, attach, port-forward, log, proxy), upgrades (a `Connection: upgrade` request,
//! as [`ForwardService`](crate::ForwardService) tells one), or resources that carry
//! credentials ([`has_secret_bodies`]); those events say `Metadata`. When a body is left out
//! for another reason (too large, not JSON, compressed, unfinished) an annotation says why.

mod background;
mod capture;
mod json;

pub use background::{BackgroundJsonLines, DEFAULT_QUEUE};

pub use capture::{AuditBody, DEFAULT_MAX_RECORDED_BODY, has_secret_bodies};
use capture::{Capture, SharedCapture};

use crate::body::GuardedBody;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;
use tower::{Layer, Service};

use crate::ext::{
    AuditAnnotations, AuditId, ClientAddr, Identity, LongRunning, ObjectRef, RequestMeta,
    UpgradeSession,
};
use crate::status::{Status, StatusDetails};

const AUDIT_ID: HeaderName = HeaderName::from_static("audit-id");
const REQUEST_OBJECT_ANNOTATION: &str = "kubegate.dev/request-object";
const RESPONSE_OBJECT_ANNOTATION: &str = "kubegate.dev/response-object";

/// How much of a request its audit event records (audit.k8s.io/v1 `Level`). Also a request
/// extension: set by a layer outside [`AuditLayer`], it overrides the layer's default for that
/// request.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum AuditLevel {
    /// No event.
    None,
    /// Request metadata (user, verb, object, response code); no bodies.
    #[default]
    Metadata,
    /// Metadata and the request body.
    Request,
    /// Metadata, the request body and the response body.
    RequestResponse,
}

impl AuditLevel {
    /// The level's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditLevel::None => "None",
            AuditLevel::Metadata => "Metadata",
            AuditLevel::Request => "Request",
            AuditLevel::RequestResponse => "RequestResponse",
        }
    }
}

/// kube's `MicroTime` wire format.
const MICRO_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// An instant as kube's `MicroTime` writes it: UTC, microseconds, `2006-01-02T15:04:05.000000Z`.
///
/// Kept as microseconds since the Unix epoch: reading the clock on the request path (twice per
/// event) does no calendar arithmetic, and the writer turns the count into digits straight in
/// the JSON line, with no string made for either timestamp. Finer instants are truncated to
/// the microsecond, as kube's `RFC3339Micro` formatting does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MicroTime {
    /// Microseconds since 1970-01-01T00:00:00Z; negative before.
    unix_micros: i64,
}

impl MicroTime {
    /// The current time.
    pub fn now() -> Self {
        MicroTime::from(std::time::SystemTime::now())
    }

    /// The instant `micros` microseconds after (before, if negative) the Unix epoch.
    pub fn from_unix_micros(micros: i64) -> Self {
        MicroTime {
            unix_micros: micros,
        }
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        self.unix_micros
    }

    /// Appends the wire form (without quotes) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        const MICROS_PER_DAY: i64 = 86_400_000_000;
        let days = self.unix_micros.div_euclid(MICROS_PER_DAY);
        let of_day = self.unix_micros.rem_euclid(MICROS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            // Outside the four-digit years; `time` writes the sign and the extra digits.
            let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.unix_micros) * 1000);
            let text = t.ok().and_then(|t| t.format(MICRO_TIME).ok());
            out.extend_from_slice(text.unwrap_or_default().as_bytes());
            return;
        }
        // Both are in range here: 0..=9999 and 0..86,400,000,000.
        let (year, of_day) = (year.unsigned_abs() as usize, of_day.unsigned_abs());
        let (seconds, micros) = ((of_day / 1_000_000) as usize, (of_day % 1_000_000) as usize);
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        // Two digits at a time from a table: a division per pair instead of one per digit.
        let mut pair = |at: usize, n: usize| {
            let at_table = 2 * (n % 100);
            text[at..at + 2].copy_from_slice(&DIGIT_PAIRS[at_table..at_table + 2]);
        };
        pair(0, year / 100);
        pair(2, year);
        pair(5, month as usize);
        pair(8, day as usize);
        pair(11, seconds / 3600);
        pair(14, seconds / 60 % 60);
        pair(17, seconds % 60);
        pair(20, micros / 10_000);
        pair(22, micros / 100);
        pair(24, micros);
        out.extend_from_slice(&text);
    }
}

/// "00" to "99".
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// The proleptic Gregorian `(year, month, day)` of the day `days` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`: eras of 400 years, years starting in March so the leap day
/// comes last).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // 0..=146_096
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // 0..=399
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // 0..=365
    let month_from_march = (5 * day_of_year + 2) / 153; // 0..=11
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1; // 1..=31
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    }; // 1..=12
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both fit: the comments above give their ranges.
    (year, month as u32, day as u32)
}

impl From<std::time::SystemTime> for MicroTime {
    fn from(t: std::time::SystemTime) -> Self {
        let saturate = |micros: u128| i64::try_from(micros).unwrap_or(i64::MAX);
        let unix_micros = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => saturate(after.as_micros()),
            // Before the epoch: round towards the past, as the digits are written.
            Err(e) => -saturate(e.duration().as_nanos().div_ceil(1000)),
        };
        MicroTime { unix_micros }
    }
}

impl From<OffsetDateTime> for MicroTime {
    fn from(t: OffsetDateTime) -> Self {
        let micros = t.unix_timestamp_nanos().div_euclid(1000);
        // `time` holds years -9999..=9999: always within i64 microseconds.
        let unix_micros =
            i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX });
        MicroTime { unix_micros }
    }
}

impl fmt::Display for MicroTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(27);
        self.write(&mut text);
        f.write_str(&String::from_utf8_lossy(&text))
    }
}

impl Serialize for MicroTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Receives audit events. Called on the request path: implementations must not block for long
/// (queue and write elsewhere if the destination is slow).
pub trait AuditSink: Send + Sync + 'static {
    /// Records one event.
    fn record(&self, event: &AuditEvent);

    /// Records one event the caller is done with: [`AuditLayer`] hands over each finished
    /// event this way. The default records it by reference; a sink that queues events
    /// ([`BackgroundJsonLines`]) keeps the box as it is, so the event is neither copied nor
    /// serialized on the request path.
    fn record_owned(&self, event: Box<AuditEvent>) {
        self.record(&event);
    }

    /// Whether events are wanted at all; a sink that discards everything says `false` and the
    /// layer then builds none (the `Audit-ID` header is still set).
    fn enabled(&self) -> bool {
        true
    }

    /// Whether the sink is behind and new requests should be refused until it catches up
    /// (their events could only add to its backlog). The default: never.
    /// [`BackgroundJsonLines`] says so while its queue is at its bound; it never blocks a
    /// recorder, so a server that keeps admitting requests meanwhile makes it drop events past
    /// eight times the bound.
    fn backlogged(&self) -> bool {
        false
    }
}

/// Writes each event as one JSON line (kube's `--audit-log-format=json`) to any writer, on the
/// recording task, flushing after each event; [`BackgroundJsonLines`] serializes and writes
/// from a thread of its own instead.
pub struct JsonLinesSink<W> {
    writer: Mutex<W>,
}

impl<W: Write + Send + 'static> JsonLinesSink<W> {
    /// Wraps `writer`.
    pub fn new(writer: W) -> Self {
        JsonLinesSink {
            writer: Mutex::new(writer),
        }
    }

    /// Returns the writer.
    pub fn into_inner(self) -> W {
        self.writer
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<W> fmt::Debug for JsonLinesSink<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesSink").finish_non_exhaustive()
    }
}

impl<W: Write + Send + 'static> AuditSink for JsonLinesSink<W> {
    fn record(&self, event: &AuditEvent) {
        let mut line = Vec::new();
        event.write_json_line(&mut line);
        let mut w = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = w.write_all(&line).and_then(|()| w.flush()) {
            tracing::warn!(error = %e, "writing an audit event failed");
        }
    }
}

impl<T: AuditSink> AuditSink for Arc<T> {
    fn record(&self, event: &AuditEvent) {
        T::record(self, event);
    }

    fn record_owned(&self, event: Box<AuditEvent>) {
        T::record_owned(self, event);
    }

    fn enabled(&self) -> bool {
        T::enabled(self)
    }
}

/// An `audit.k8s.io/v1` Event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Always `Event`.
    pub kind: &'static str,
    /// Always `audit.k8s.io/v1`.
    pub api_version: &'static str,
    /// `Metadata`, `Request` or `RequestResponse`: what this event records.
    pub level: &'static str,
    /// The request's audit ID (shared with the request's [`AuditId`]).
    #[serde(rename = "auditID")]
    pub audit_id: Arc<str>,
    /// `ResponseStarted` or `ResponseComplete`.
    pub stage: &'static str,
    /// Request URI as the client sent it.
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// kube verb.
    pub verb: Cow<'static, str>,
    /// The authenticated user (empty user name when authentication did not run or failed).
    pub user: UserInfo,
    /// The user the request acted as, when the authenticated user impersonated another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<UserInfo>,
    /// Client addresses as kube-apiserver lists them (`utilnet.SourceIPs`): the addresses in
    /// the first `X-Forwarded-For` line, `X-Real-Ip` if new, then the peer address unless it
    /// is the last one already.
    #[serde(rename = "sourceIPs")]
    pub source_ips: Vec<String>,
    /// `User-Agent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The addressed object (shared with the request's [`RequestMeta`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectRef>,
    /// Response code, and for a Status kubegate answered its status, message, reason and
    /// details ([`ResponseStatus`]); absent if the service failed without a response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    /// The request body (JSON), at level `Request` and above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_object: Option<Box<RawValue>>,
    /// The response body (JSON), at level `RequestResponse`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_object: Option<Box<RawValue>>,
    /// When the request arrived.
    pub request_received_timestamp: MicroTime,
    /// When this stage was reached.
    pub stage_timestamp: MicroTime,
    /// Annotations (e.g. authorization decision).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<Cow<'static, str>, Cow<'static, str>>,
}

/// `user` of an audit event (`authentication.k8s.io/v1` UserInfo).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// User name.
    pub username: String,
    /// UID.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Extra attributes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl From<&Identity> for UserInfo {
    fn from(i: &Identity) -> Self {
        UserInfo::from(i.clone())
    }
}

impl From<Identity> for UserInfo {
    fn from(i: Identity) -> Self {
        UserInfo {
            username: i.name,
            uid: i.uid,
            groups: i.groups,
            extra: i.extra,
        }
    }
}

/// `responseStatus`: a `meta/v1` Status, its fields in `meta/v1` order.
///
/// What it holds follows kube-apiserver (`pkg/audit/request.go`, `LogResponseObject`, called
/// by the negotiated response writer at every level from `Metadata` up): when the response
/// object is a `Status`, its bounded fields `status`, `message`, `reason`, `details` and
/// `code`; for any other response, the code alone (the audit filter's response writer).
///
/// kubegate's own Status answers (401 from [`AuthnLayer`](crate::AuthnLayer), 403 from
/// [`AuthzLayer`](crate::AuthzLayer), the gateway's 404 and 429, [`ForwardService`]'s
/// 502/503/504, …) carry this as a response extension, put there by
/// [`Status::to_response`](crate::Status::to_response); [`AuditLayer`] takes it from the
/// response and records it. Bodies a Status came in from the upstream are not parsed for it:
/// that would mean holding the body back in front of the client, and kube-apiserver itself
/// records only the code of a response it proxies (the upstream kube-apiserver's own audit log
/// has the whole Status). Neither are plain-text error bodies, nor the raw Status of
/// [`Status::request_timeout`](crate::Status::request_timeout): kube writes both past the
/// negotiated writer, so its events carry their code alone too.
///
/// [`ForwardService`]: crate::ForwardService
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseStatus {
    /// Always `{}`.
    pub metadata: BTreeMap<String, String>,
    /// `Success` or `Failure`, when the response was a Status (or the layer writes the whole
    /// status itself: a request that ended without a response).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// The Status' `message`, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Cow<'static, str>>,
    /// The Status' `reason` (`Unauthorized`, `Forbidden`, …), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'static, str>>,
    /// The Status' `details`, when it has them (`Some(default)` renders `{}`, as kube does for
    /// a non-nil empty `details`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// HTTP status code.
    pub code: u16,
}

impl ResponseStatus {
    /// The status of a response with this code.
    pub fn code(code: u16) -> Self {
        ResponseStatus {
            metadata: BTreeMap::new(),
            status: None,
            message: None,
            reason: None,
            details: None,
            code,
        }
    }

    /// What kube-apiserver's audit filter records when a request ends before any status was
    /// written (the client went away, or the handler returned without answering):
    /// `{code: 200, status: Success, message: "Connection closed early"}` (apiserver
    /// `endpoints/filters/audit.go`, `fakedSuccessStatus`).
    pub fn connection_closed_early() -> Self {
        ResponseStatus {
            status: Some("Success"),
            message: Some(Cow::Borrowed("Connection closed early")),
            ..ResponseStatus::code(200)
        }
    }
}

impl From<&Status> for ResponseStatus {
    /// The bounded fields kube copies from a Status response object (empty strings are
    /// omitted, as Go's `omitempty` omits them).
    fn from(s: &Status) -> Self {
        let text = |t: &str| (!t.is_empty()).then(|| Cow::Owned(t.to_owned()));
        ResponseStatus {
            metadata: BTreeMap::new(),
            status: Some("Failure"),
            message: text(&s.message),
            reason: text(&s.reason),
            details: s.details.clone(),
            code: s.code,
        }
    }
}

/// Layer applying [`Audit`].
pub struct AuditLayer<K> {
    sink: Arc<K>,
    options: Options,
}

/// What a layer records when the request does not say.
#[derive(Debug, Clone, Copy)]
struct Options {
    level: AuditLevel,
    max_recorded_body: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            level: AuditLevel::Metadata,
            max_recorded_body: DEFAULT_MAX_RECORDED_BODY,
        }
    }
}

impl<K: AuditSink> AuditLayer<K> {
    /// Sends events to `sink`, at level `Metadata` unless a request says otherwise.
    pub fn new(sink: K) -> Self {
        AuditLayer::from_arc(Arc::new(sink))
    }

    /// Shares an existing sink.
    pub fn from_arc(sink: Arc<K>) -> Self {
        AuditLayer {
            sink,
            options: Options::default(),
        }
    }

    /// The level of requests that carry no [`AuditLevel`] extension.
    pub fn with_level(mut self, level: AuditLevel) -> Self {
        self.options.level = level;
        self
    }

    /// The largest body recorded in an event ([`DEFAULT_MAX_RECORDED_BODY`] by default); a
    /// larger one streams through unrecorded. The bound is also the most memory one request's
    /// copy may hold.
    pub fn with_max_recorded_body(mut self, bytes: usize) -> Self {
        self.options.max_recorded_body = bytes;
        self
    }
}

impl<K> Clone for AuditLayer<K> {
    fn clone(&self) -> Self {
        AuditLayer {
            sink: self.sink.clone(),
            options: self.options,
        }
    }
}

impl<K> fmt::Debug for AuditLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLayer").finish_non_exhaustive()
    }
}

impl<S, K> Layer<S> for AuditLayer<K> {
    type Service = Audit<S, K>;

    fn layer(&self, inner: S) -> Audit<S, K> {
        Audit {
            inner,
            sink: self.sink.clone(),
            options: self.options,
        }
    }
}

/// Middleware emitting audit events.
pub struct Audit<S, K> {
    inner: S,
    sink: Arc<K>,
    options: Options,
}

impl<S: Clone, K> Clone for Audit<S, K> {
    fn clone(&self) -> Self {
        Audit {
            inner: self.inner.clone(),
            sink: self.sink.clone(),
            options: self.options,
        }
    }
}

impl<S: fmt::Debug, K> fmt::Debug for Audit<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A random (version 4) UUID for a request the client sent no `Audit-ID` for. The bytes come
/// from the thread's userspace CSPRNG (seeded from the OS, reseeded periodically), not from a
/// `getrandom` system call per request as `Uuid::new_v4` makes.
fn new_audit_id() -> Arc<str> {
    let bytes: [u8; 16] = rand::random();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Arc::from(
        &*uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .encode_lower(&mut text),
    )
}

/// An audit ID a client may set: kube accepts any non-empty value; we additionally bound it so
/// logs stay sane.
fn valid_client_audit_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?.trim();
    (!s.is_empty() && s.len() <= 128).then_some(s)
}

/// Everything needed to write the event once the response is known; dropping it emits
/// `ResponseComplete`.
pub struct Pending<K: AuditSink> {
    sink: Arc<K>,
    event: Option<Box<AuditEvent>>,
    request_body: Option<SharedCapture>,
    response_body: Option<SharedCapture>,
}

impl<K: AuditSink> fmt::Debug for Pending<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl<K: AuditSink> Drop for Pending<K> {
    fn drop(&mut self) {
        if let Some(mut event) = self.event.take() {
            event.stage = "ResponseComplete";
            event.stage_timestamp = MicroTime::now();
            let bodies = [
                (&self.request_body, REQUEST_OBJECT_ANNOTATION),
                (&self.response_body, RESPONSE_OBJECT_ANNOTATION),
            ];
            for (i, (capture, annotation)) in bodies.into_iter().enumerate() {
                let Some(capture) = capture else { continue };
                match capture::lock(capture).object() {
                    Ok(object) if i == 0 => event.request_object = object,
                    Ok(object) => event.response_object = object,
                    Err(reason) => {
                        event
                            .annotations
                            .insert(annotation.into(), format!("omitted: {reason}").into());
                    }
                }
            }
            self.sink.record_owned(event);
        }
    }
}

/// A `User-Agent` as kube-apiserver records it (apiserver `pkg/audit/request.go`
/// `maybeTruncateUserAgent`): at most 1,024 bytes, then `...TRUNCATED`. A head may hold a
/// megabyte of it, which every event would carry otherwise.
fn audited_user_agent(ua: &str) -> String {
    const MAX: usize = 1024;
    if ua.len() <= MAX {
        return ua.to_owned();
    }
    // `to_str` let only ASCII through, but a cut must not split a character regardless.
    let mut end = MAX;
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...TRUNCATED", &ua[..end])
}

/// Whether `headers` describe a body that can be recorded as a JSON object.
fn recordable(headers: &http::HeaderMap) -> Result<(), &'static str> {
    let encoded = headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err("content-encoded");
    }
    let json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| {
            let essence = v.split(';').next().unwrap_or_default().trim();
            // JSON, JSON patches, and server-side apply (kubectl sends its YAML type with JSON).
            essence.eq_ignore_ascii_case("application/json")
                || essence.ends_with("+json")
                || essence.eq_ignore_ascii_case("application/apply-patch+yaml")
        });
    if json { Ok(()) } else { Err("not JSON") }
}

/// A capture for a body with these headers, or one that records why it is left out.
fn capture_for(headers: &http::HeaderMap, limit: usize) -> SharedCapture {
    match recordable(headers) {
        Ok(()) => Capture::shared(limit),
        Err(reason) => Capture::omitted(reason),
    }
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for Audit<S, K>
where
    S: Service<Request<AuditBody<ReqBody>>, Response = Response<ResBody>>,
    K: AuditSink,
{
    type Response = Response<RecordedBody<ResBody, K>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let received = MicroTime::now();
        let id: Arc<str> = match req.headers().get(&AUDIT_ID).and_then(valid_client_audit_id) {
            Some(s) => s.into(),
            None => new_audit_id(),
        };
        // Forwarded upstream too, so the upstream's audit log carries the same ID; the
        // response echoes it (a clone of the value shares its bytes). Marked never-indexed for
        // HPACK: a value used once would only churn the h2 header table, evicting the headers
        // that repeat on every request (the impersonation headers).
        let header = HeaderValue::from_str(&id).ok().map(|mut v| {
            v.set_sensitive(true);
            v
        });
        if let Some(v) = &header {
            req.headers_mut().insert(AUDIT_ID, v.clone());
        }
        req.extensions_mut().insert(AuditId(id.clone()));
        let long_running = req.extensions().get::<LongRunning>().is_some_and(|l| l.0);
        let meta = req.extensions().get::<RequestMeta>();
        let requested = if self.sink.enabled() {
            req.extensions()
                .get::<AuditLevel>()
                .copied()
                .unwrap_or(self.options.level)
        } else {
            AuditLevel::None
        };
        // An upgrade is decided as ForwardService decides it (`Connection: upgrade`): a bare
        // `Upgrade` header is forwarded as an ordinary request, body and all, and must not
        // let a client lower its own audit level. Without `RequestMeta` nothing says what the
        // request addresses, so nothing says its body is not a Secret's: no body is recorded.
        let bodies_allowed = !long_running
            && !crate::headers::is_upgrade_request(req.headers())
            && meta.is_some_and(|m| !m.object_ref.as_ref().is_some_and(has_secret_bodies));
        let level = match requested {
            AuditLevel::Request | AuditLevel::RequestResponse if !bodies_allowed => {
                AuditLevel::Metadata
            }
            level => level,
        };
        let event = (level != AuditLevel::None).then(|| {
            let source_ips = crate::headers::source_ips(
                req.headers(),
                req.extensions()
                    .get::<ClientAddr>()
                    .map(|ClientAddr(addr)| addr.ip()),
            );
            // Boxed: the event (≈ 550 bytes) waits in this layer's future and then in the
            // response body, both moved several times on their way to hyper.
            Box::new(AuditEvent {
                kind: "Event",
                api_version: "audit.k8s.io/v1",
                level: level.as_str(),
                audit_id: id.clone(),
                stage: "RequestReceived",
                request_uri: req
                    .uri()
                    .path_and_query()
                    .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
                verb: meta.map_or_else(
                    || Cow::Owned(req.method().as_str().to_ascii_lowercase()),
                    |m| m.verb.clone(),
                ),
                user: UserInfo::default(),
                impersonated_user: None,
                source_ips,
                user_agent: req
                    .headers()
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(audited_user_agent),
                object_ref: meta.and_then(|m| m.object_ref.clone()),
                response_status: None,
                request_object: None,
                response_object: None,
                request_received_timestamp: received,
                stage_timestamp: received,
                annotations: BTreeMap::new(),
            })
        });
        let request_body = (level >= AuditLevel::Request)
            .then(|| capture_for(req.headers(), self.options.max_recorded_body));
        // The identity is only known after authentication, which runs inside this layer;
        // a shared slot lets the inner stack's request extension reach the event.
        let slot = IdentitySlot::default();
        if let Some(identity) = req.extensions().get::<Identity>() {
            slot.set(identity.clone());
        }
        req.extensions_mut().insert(slot.clone());
        let req = req.map(|body| AuditBody::with_capture(body, request_body.clone()));
        ResponseFuture {
            inner: self.inner.call(req),
            state: Some(State {
                sink: self.sink.clone(),
                event,
                record_response: level == AuditLevel::RequestResponse,
                max_recorded_body: self.options.max_recorded_body,
                request_body,
                long_running,
                header,
                slot,
            }),
        }
    }
}

/// Where the inner stack reports back to the audit layer what it learns about a request: the
/// identity [`AuthnLayer`](crate::AuthnLayer) authenticated, the one the user impersonates,
/// and [`AuthzLayer`](crate::AuthzLayer)'s annotations (a request extension; the inner stack
/// writes it, the audit layer reads it when the response comes back or the call fails).
#[derive(Debug, Clone, Default)]
pub struct IdentitySlot(Arc<Mutex<Reported>>);

#[derive(Debug, Default)]
struct Reported {
    user: Option<Identity>,
    impersonated: Option<Identity>,
    annotations: Option<AuditAnnotations>,
}

impl IdentitySlot {
    /// Records the authenticated identity (audit `user`).
    pub fn set(&self, identity: Identity) {
        self.lock().user = Some(identity);
    }

    /// Records the identity the authenticated user impersonates (audit `impersonatedUser`).
    pub fn set_impersonated(&self, identity: Identity) {
        self.lock().impersonated = Some(identity);
    }

    /// Adds annotations to the event (the later of two values for one key wins), e.g.
    /// [`AuditAnnotations::authorization`] from a layer that authorizes by itself.
    pub fn annotate(&self, annotations: AuditAnnotations) {
        let mut reported = self.lock();
        match &mut reported.annotations {
            Some(AuditAnnotations(held)) => held.extend(annotations.0),
            none => *none = Some(annotations),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reported> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self) -> Reported {
        std::mem::take(&mut *self.lock())
    }
}

struct State<K: AuditSink> {
    sink: Arc<K>,
    /// `None` at level `None`.
    event: Option<Box<AuditEvent>>,
    record_response: bool,
    max_recorded_body: usize,
    request_body: Option<SharedCapture>,
    long_running: bool,
    /// The `Audit-ID` header value the response echoes.
    header: Option<HeaderValue>,
    slot: IdentitySlot,
}

/// Moves what the inner stack reported (identity, impersonated identity, annotations) into
/// `event`: moved, not cloned.
fn take_reported(event: &mut AuditEvent, slot: &IdentitySlot) {
    let reported = slot.take();
    if let Some(identity) = reported.user {
        event.user = UserInfo::from(identity);
    }
    event.impersonated_user = reported.impersonated.map(UserInfo::from);
    if let Some(AuditAnnotations(a)) = reported.annotations {
        event.annotations = a;
    }
}

pin_project! {
    /// Response future of [`Audit`]. Dropped before the inner service answered (the client
    /// went away, or a timeout outside gave up on the request), it still records the event,
    /// as kube-apiserver's audit filter does in its deferred function: the identity and
    /// annotations reported so far, and the status kube fakes when none was written
    /// ([`ResponseStatus::connection_closed_early`]); a long-running request gets its
    /// `ResponseStarted` stage first, as there.
    pub struct ResponseFuture<F, K: AuditSink> {
        #[pin]
        inner: F,
        state: Option<State<K>>,
    }

    impl<F, K: AuditSink> PinnedDrop for ResponseFuture<F, K> {
        fn drop(this: Pin<&mut Self>) {
            // `None` once the future completed: the event went into the response body or
            // was recorded with the error, so it is recorded exactly once either way.
            let Some(State {
                sink,
                event,
                request_body,
                long_running,
                slot,
                ..
            }) = this.project().state.take()
            else {
                return;
            };
            let Some(mut event) = event else { return };
            take_reported(&mut event, &slot);
            event.response_status = Some(ResponseStatus::connection_closed_early());
            if long_running {
                event.stage = "ResponseStarted";
                event.stage_timestamp = MicroTime::now();
                sink.record(&event);
            }
            // Writes `ResponseComplete`, with the request body's annotation if one was being
            // recorded (it did not finish).
            drop(Pending {
                sink,
                event: Some(event),
                request_body,
                response_body: None,
            });
        }
    }
}

impl<F, K: AuditSink> fmt::Debug for ResponseFuture<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, K, B, E> Future for ResponseFuture<F, K>
where
    F: Future<Output = Result<Response<B>, E>>,
    K: AuditSink,
{
    type Output = Result<Response<RecordedBody<B, K>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let Some(State {
            sink,
            mut event,
            record_response,
            max_recorded_body,
            request_body,
            long_running,
            header,
            slot,
        }) = this.state.take()
        else {
            // Polled after completion: a contract violation by the caller; report it as pending.
            return Poll::Pending;
        };
        if let Some(event) = event.as_mut() {
            take_reported(event, &slot);
        }
        match result {
            Ok(res) => {
                let (mut parts, body) = res.into_parts();
                if let Some(v) = header {
                    parts.headers.insert(AUDIT_ID, v);
                }
                let response_body = (record_response && event.is_some()).then(|| {
                    if parts.status == http::StatusCode::SWITCHING_PROTOCOLS {
                        Capture::omitted("the connection was upgraded")
                    } else {
                        capture_for(&parts.headers, max_recorded_body)
                    }
                });
                if let Some(event) = event.as_mut() {
                    // A Status kubegate wrote carries its fields (see `ResponseStatus`); the
                    // code is the one sent, as kube's response writer sets it last. Other
                    // responses usually have no extension map at all, and then looking costs
                    // a branch.
                    let code = parts.status.as_u16();
                    event.response_status =
                        Some(match parts.extensions.remove::<ResponseStatus>() {
                            Some(status) => ResponseStatus { code, ..status },
                            None => ResponseStatus::code(code),
                        });
                    // Consumed: the annotations are the event's, and nothing past this layer
                    // reads them.
                    if let Some(AuditAnnotations(a)) = parts.extensions.remove::<AuditAnnotations>()
                    {
                        if event.annotations.is_empty() {
                            event.annotations = a;
                        } else {
                            event.annotations.extend(a);
                        }
                    }
                    if long_running {
                        event.stage = "ResponseStarted";
                        event.stage_timestamp = MicroTime::now();
                        sink.record(event);
                    }
                }
                let pending = Pending {
                    sink,
                    event,
                    request_body,
                    response_body: response_body.clone(),
                };
                let body = AuditBody::with_capture(body, response_body);
                // A bridged upgrade ends when its session does, not with the 101's empty
                // body: the event waits in the session for `ResponseComplete` (kube's audit
                // filter completes its event when `tryUpgrade` returns, after the copy).
                // Every other response costs one comparison here.
                if parts.status == http::StatusCode::SWITCHING_PROTOCOLS
                    && let Some(session) = parts.extensions.get::<UpgradeSession>()
                {
                    session.hold(pending);
                    return Poll::Ready(Ok(Response::from_parts(
                        parts,
                        GuardedBody::unguarded(body),
                    )));
                }
                Poll::Ready(Ok(Response::from_parts(
                    parts,
                    GuardedBody::new(body, pending),
                )))
            }
            Err(e) => {
                if let Some(mut event) = event {
                    event.stage = "ResponseComplete";
                    event.stage_timestamp = MicroTime::now();
                    sink.record_owned(event);
                }
                Poll::Ready(Err(e))
            }
        }
    }
}

/// The response body [`Audit`] answers with: the inner body, frame by frame, copied when the
/// event records it; the event is written when the body ends, fails, or is dropped — or, for
/// the 101 of a bridged upgrade, when its [`UpgradeSession`] ends.
pub type RecordedBody<B, K> = GuardedBody<AuditBody<B>, Pending<K>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::{Authenticated, Authenticator, AuthnError, AuthnLayer};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<AuditEvent>>);
    impl AuditSink for Recorder {
        fn record(&self, event: &AuditEvent) {
            self.0.lock().unwrap().push(event.clone());
        }
    }
    impl Recorder {
        fn events(&self) -> Vec<AuditEvent> {
            self.0.lock().unwrap().clone()
        }
    }

    struct Jane;
    impl Authenticator for Jane {
        type Scope = ();
        type Future = std::future::Ready<Result<Authenticated<()>, AuthnError>>;
        fn authenticate(&self, req: &http::request::Parts) -> Self::Future {
            std::future::ready(self.check(req))
        }
    }
    impl Jane {
        fn check(&self, _: &http::request::Parts) -> Result<Authenticated<()>, AuthnError> {
            Ok(Authenticated {
                identity: Identity::new("jane", vec!["devs".into()]),
                scope: None,
            })
        }
    }

    fn request(uri: &str) -> Request<Full<Bytes>> {
        let mut req = Request::builder()
            .uri(uri)
            .header("user-agent", "kubectl/v1.34.0")
            .header("x-forwarded-for", "10.0.0.1, 10.0.0.2")
            .body(Full::new(Bytes::new()))
            .unwrap();
        req.extensions_mut()
            .insert(ClientAddr("192.0.2.7:40000".parse().unwrap()));
        req.extensions_mut().insert(RequestMeta {
            target: Arc::from("cluster/prod"),
            verb: "list".into(),
            object_ref: Some(ObjectRef::new("pods", "default", "", "", "v1", "")),
        });
        req
    }

    /// kube-apiserver's `maybeTruncateUserAgent`: 1,024 bytes kept, then `...TRUNCATED`.
    #[test]
    fn long_user_agents_are_cut_as_kube_apiserver_cuts_them() {
        assert_eq!(audited_user_agent("kubectl/v1.34.0"), "kubectl/v1.34.0");
        let exact = "a".repeat(1024);
        assert_eq!(audited_user_agent(&exact), exact);
        let long = "b".repeat(100_000);
        assert_eq!(
            audited_user_agent(&long),
            format!("{}...TRUNCATED", "b".repeat(1024))
        );
    }

    #[test]
    fn micro_time_matches_the_format_description() {
        for t in [
            time::macros::datetime!(2026-12-01 23:05:09.000042 UTC),
            time::macros::datetime!(0001-01-01 00:00:00 UTC),
            time::macros::datetime!(9999-12-31 23:59:59.999999 UTC),
            time::macros::datetime!(2024-02-29 12:00:00.5 +02:00),
        ] {
            let expected = t
                .to_offset(time::UtcOffset::UTC)
                .format(MICRO_TIME)
                .unwrap();
            assert_eq!(MicroTime::from(t).to_string(), expected);
        }
        assert_eq!(
            MicroTime::from(time::macros::datetime!(2026-12-01 23:05:09.000042 UTC)).to_string(),
            "2026-12-01T23:05:09.000042Z"
        );
    }

    #[test]
    fn micro_time_from_the_system_clock_truncates_towards_the_past() {
        use std::time::{Duration, UNIX_EPOCH};
        for (t, expected) in [
            (UNIX_EPOCH, "1970-01-01T00:00:00.000000Z"),
            (
                UNIX_EPOCH + Duration::from_nanos(1_999),
                "1970-01-01T00:00:00.000001Z",
            ),
            (
                UNIX_EPOCH - Duration::from_nanos(1),
                "1969-12-31T23:59:59.999999Z",
            ),
            (
                UNIX_EPOCH - Duration::from_micros(1),
                "1969-12-31T23:59:59.999999Z",
            ),
            (
                UNIX_EPOCH - Duration::from_nanos(1_001),
                "1969-12-31T23:59:59.999998Z",
            ),
            (
                UNIX_EPOCH + Duration::from_micros(1_796_166_309_000_042),
                "2026-12-01T23:05:09.000042Z",
            ),
        ] {
            assert_eq!(MicroTime::from(t).to_string(), expected, "{t:?}");
        }
        assert!(MicroTime::now() > MicroTime::from_unix_micros(1_796_166_309_000_042));
    }

    proptest::proptest! {
        /// The hand-written digits against `time`'s formatter, over every instant `time` holds.
        #[test]
        fn micro_time_digits_match_the_format_description(
            seconds in -377_705_116_800i64..253_402_300_800,
            nanos in 0u32..1_000_000_000,
        ) {
            let t = OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(seconds) * 1_000_000_000 + i128::from(nanos),
            )
            .unwrap();
            proptest::prop_assert_eq!(MicroTime::from(t).to_string(), t.format(MICRO_TIME).unwrap());
        }

        /// The system clock's instants and `time`'s agree, on both sides of the epoch.
        #[test]
        fn micro_time_from_system_time_agrees_with_time(nanos in -62_135_596_800_000_000_000i128..253_402_300_800_000_000_000) {
            let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            proptest::prop_assert_eq!(MicroTime::from(std::time::SystemTime::from(t)), MicroTime::from(t));
        }
    }

    #[tokio::test]
    async fn one_complete_event_when_the_body_ends_with_generated_audit_id() {
        let sink = Arc::new(Recorder::default());
        let inner = tower::service_fn(|req: Request<AuditBody<Full<Bytes>>>| async move {
            // The inner stack (and the upstream) sees the same audit ID, never indexed by
            // HPACK.
            assert!(req.headers()["audit-id"].is_sensitive());
            let id = req.headers()["audit-id"].to_str().unwrap().to_owned();
            let mut res = Response::new(Full::new(Bytes::from(id)));
            res.extensions_mut().insert(AuditAnnotations(
                [("authorization.k8s.io/decision".into(), "allow".into())].into(),
            ));
            Ok::<_, Infallible>(res)
        });
        let svc = AuditLayer::from_arc(sink.clone()).layer(AuthnLayer::new(Jane).layer(inner));
        let res = svc
            .oneshot(request("/api/v1/namespaces/default/pods?limit=500"))
            .await
            .unwrap();
        let id = res.headers()["audit-id"].to_str().unwrap().to_owned();
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version(), Some(uuid::Version::Random), "{id}");
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
        assert_ne!(new_audit_id(), new_audit_id());
        assert!(sink.events().is_empty(), "emitted before the body ended");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, id.as_bytes());
        let events = sink.events();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.stage, "ResponseComplete");
        assert_eq!(&*e.audit_id, id);
        assert_eq!(e.request_uri, "/api/v1/namespaces/default/pods?limit=500");
        assert_eq!(e.verb, "list");
        assert_eq!(e.user.username, "jane");
        assert_eq!(e.user.groups, ["devs"]);
        assert_eq!(e.source_ips, ["10.0.0.1", "10.0.0.2", "192.0.2.7"]);
        assert_eq!(e.user_agent.as_deref(), Some("kubectl/v1.34.0"));
        assert_eq!(e.response_status.as_ref().unwrap().code, 200);
        assert_eq!(e.annotations["authorization.k8s.io/decision"], "allow");
        assert!(e.request_received_timestamp <= e.stage_timestamp);
    }

    #[tokio::test]
    async fn source_ips_keep_only_addresses_as_kube_does() {
        let sink = Arc::new(Recorder::default());
        let inner = tower::service_fn(|_req: Request<AuditBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
        let svc = AuditLayer::from_arc(sink.clone()).layer(inner);
        // 400 KB of entries that are not addresses: not one string each.
        let mut req = request("/api/v1/pods");
        let junk = "a,".repeat(200_000);
        req.headers_mut()
            .insert("x-forwarded-for", HeaderValue::from_str(&junk).unwrap());
        drop(svc.clone().oneshot(req).await.unwrap());
        // Only the first line counts, invalid entries are skipped, X-Real-Ip is added when
        // new, and the peer address when it is not the last one already.
        let mut req = request("/api/v1/pods");
        req.headers_mut().insert(
            "x-forwarded-for",
            HeaderValue::from_static("garbage, 4.5.6.7 ,192.0.2.7"),
        );
        req.headers_mut()
            .append("x-forwarded-for", HeaderValue::from_static("10.9.9.9"));
        req.headers_mut()
            .insert("x-real-ip", HeaderValue::from_static("2.2.2.2"));
        drop(svc.oneshot(req).await.unwrap());
        let events = sink.events();
        assert_eq!(events[0].source_ips, ["192.0.2.7"]);
        assert_eq!(
            events[1].source_ips,
            ["4.5.6.7", "192.0.2.7", "2.2.2.2", "192.0.2.7"]
        );
    }

    #[tokio::test]
    async fn client_audit_id_is_echoed_and_long_running_requests_get_two_stages() {
        let sink = Arc::new(Recorder::default());
        let inner = tower::service_fn(|_req: Request<AuditBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
        });
        let svc = AuditLayer::from_arc(sink.clone()).layer(inner);
        let mut req = request("/api/v1/pods?watch=true");
        req.headers_mut()
            .insert("audit-id", HeaderValue::from_static("client-chosen-id"));
        req.extensions_mut().insert(LongRunning(true));
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.headers()["audit-id"], "client-chosen-id");
        let stages: Vec<_> = sink.events().iter().map(|e| e.stage).collect();
        assert_eq!(stages, ["ResponseStarted"]);
        drop(res);
        let events = sink.events();
        let stages: Vec<_> = events.iter().map(|e| e.stage).collect();
        assert_eq!(stages, ["ResponseStarted", "ResponseComplete"]);
        assert!(events.iter().all(|e| &*e.audit_id == "client-chosen-id"));
        assert_eq!(events[0].user.username, "", "no authentication ran");
    }

    /// Polls `fut` once, with a waker that does nothing.
    fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test]
    async fn a_request_dropped_before_the_response_is_recorded_once_as_closed_early() {
        for long_running in [false, true] {
            let sink = Arc::new(Recorder::default());
            // An upstream that never answers: the client gives up first.
            let inner = tower::service_fn(|_req: Request<AuditBody<Full<Bytes>>>| {
                std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
            });
            let mut svc =
                AuditLayer::from_arc(sink.clone()).layer(AuthnLayer::new(Jane).layer(inner));
            let mut req = request("/api/v1/namespaces/default/pods");
            req.extensions_mut().insert(LongRunning(long_running));
            let mut fut = Box::pin(svc.ready().await.unwrap().call(req));
            assert!(poll_once(fut.as_mut()).is_pending());
            assert!(
                sink.events().is_empty(),
                "recorded before the request ended"
            );
            drop(fut);
            let events = sink.events();
            let stages: Vec<_> = events.iter().map(|e| e.stage).collect();
            let expected: &[&str] = if long_running {
                &["ResponseStarted", "ResponseComplete"]
            } else {
                &["ResponseComplete"]
            };
            assert_eq!(stages, expected);
            for e in &events {
                assert_eq!(e.user.username, "jane");
                assert_eq!(e.user.groups, ["devs"]);
                let line = String::from_utf8({
                    let mut line = Vec::new();
                    e.write_json_line(&mut line);
                    line
                })
                .unwrap();
                assert!(
                    line.contains(
                        "\"responseStatus\":{\"metadata\":{},\"status\":\"Success\",\"message\":\"Connection closed early\",\"code\":200}"
                    ),
                    "{line}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_response_body_dropped_mid_stream_is_recorded_once() {
        use futures_util::StreamExt;
        let sink = Arc::new(Recorder::default());
        // A response that sends one frame and then waits forever (a watch, a slow list).
        let inner = tower::service_fn(|_req: Request<AuditBody<Full<Bytes>>>| async {
            let frames = futures_util::stream::iter([Ok::<_, Infallible>(http_body::Frame::data(
                Bytes::from_static(b"{\"kind\":"),
            ))])
            .chain(futures_util::stream::pending());
            let res = Response::builder()
                .header("content-type", "application/json")
                .body(http_body_util::StreamBody::new(frames))
                .unwrap();
            Ok::<_, Infallible>(res)
        });
        let layer = AuditLayer::from_arc(sink.clone()).with_level(AuditLevel::RequestResponse);
        let mut req = request("/api/v1/namespaces/default/pods");
        // Authenticated outside the layer (an `AuthnLayer` needs a body it can answer with).
        req.extensions_mut()
            .insert(Identity::new("jane", vec!["devs".into()]));
        let mut res = layer.layer(inner).oneshot(req).await.unwrap();
        assert!(res.frame().await.is_some());
        assert!(sink.events().is_empty(), "recorded before the body ended");
        // The client goes away: hyper drops the body.
        drop(res);
        let events = sink.events();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.stage, "ResponseComplete");
        assert_eq!(e.user.username, "jane");
        assert_eq!(e.response_status.as_ref().unwrap().code, 200);
        assert!(e.response_status.as_ref().unwrap().message.is_none());
        assert!(e.response_object.is_none());
        assert_eq!(
            e.annotations[RESPONSE_OBJECT_ANNOTATION],
            "omitted: the body did not finish"
        );
    }

    /// An upstream stand-in answering every request with a JSON echo of its body, read to the
    /// end as a forwarding service would.
    fn echo() -> impl Service<
        Request<AuditBody<Full<Bytes>>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Future + Send,
    > + Clone {
        tower::service_fn(|req: Request<AuditBody<Full<Bytes>>>| async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut echoed = b"{\"kind\":\"ConfigMap\",\"echo\":".to_vec();
            echoed.extend_from_slice(if body.is_empty() { b"null" } else { &body });
            echoed.push(b'}');
            let res = Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(echoed)))
                .unwrap();
            Ok::<_, Infallible>(res)
        })
    }

    fn post(uri: &str, resource: &str, body: &'static str) -> Request<Full<Bytes>> {
        let mut req = request(uri);
        *req.method_mut() = http::Method::POST;
        *req.body_mut() = Full::new(Bytes::from_static(body.as_bytes()));
        req.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        req.extensions_mut().insert(RequestMeta {
            target: Arc::from("cluster/prod"),
            verb: "create".into(),
            object_ref: Some(ObjectRef::new(resource, "default", "", "", "v1", "")),
        });
        req
    }

    async fn run(
        layer: AuditLayer<Recorder>,
        sink: &Recorder,
        req: Request<Full<Bytes>>,
    ) -> (Bytes, Vec<AuditEvent>) {
        let res = layer.layer(echo()).oneshot(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (body, sink.events())
    }

    #[tokio::test]
    async fn request_response_level_records_both_bodies_and_forwards_them_unchanged() {
        let sink = Arc::new(Recorder::default());
        let layer = AuditLayer::from_arc(sink.clone()).with_level(AuditLevel::RequestResponse);
        let (body, events) = run(
            layer,
            &sink,
            post(
                "/api/v1/namespaces/default/configmaps",
                "configmaps",
                "{\"data\":{\"a\":\"1\"}}",
            ),
        )
        .await;
        assert_eq!(
            body,
            "{\"kind\":\"ConfigMap\",\"echo\":{\"data\":{\"a\":\"1\"}}}"
        );
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.level, "RequestResponse");
        assert_eq!(
            e.request_object.as_ref().unwrap().get(),
            "{\"data\":{\"a\":\"1\"}}"
        );
        assert_eq!(e.response_object.as_ref().unwrap().get(), body);
        assert!(e.annotations.is_empty(), "{:?}", e.annotations);
    }

    #[tokio::test]
    async fn the_request_extension_overrides_the_layer_level() {
        let sink = Arc::new(Recorder::default());
        let mut req = post("/api/v1/namespaces/default/configmaps", "configmaps", "{}");
        req.extensions_mut().insert(AuditLevel::Request);
        let (_, events) = run(AuditLayer::from_arc(sink.clone()), &sink, req).await;
        assert_eq!(events[0].level, "Request");
        assert_eq!(events[0].request_object.as_ref().unwrap().get(), "{}");
        assert!(events[0].response_object.is_none());

        let mut req = post("/api/v1/namespaces/default/configmaps", "configmaps", "{}");
        req.extensions_mut().insert(AuditLevel::None);
        let layer = AuditLayer::from_arc(sink.clone()).with_level(AuditLevel::RequestResponse);
        let (body, events) = run(layer, &sink, req).await;
        assert!(!body.is_empty());
        assert_eq!(events.len(), 1, "level None records nothing");
    }

    #[tokio::test]
    async fn credential_bodies_and_long_running_requests_stay_at_metadata() {
        let sink = Arc::new(Recorder::default());
        let layer = AuditLayer::from_arc(sink.clone()).with_level(AuditLevel::RequestResponse);
        let req = post(
            "/api/v1/namespaces/default/secrets",
            "secrets",
            "{\"stringData\":{\"password\":\"hunter2\"}}",
        );
        let (body, events) = run(layer.clone(), &sink, req).await;
        assert!(body.ends_with(b"\"hunter2\"}}}"), "forwarded unchanged");
        let line = serde_json::to_string(&events[0]).unwrap();
        assert_eq!(events[0].level, "Metadata");
        assert!(!line.contains("hunter2"), "{line}");

        let mut req = post("/api/v1/namespaces/default/pods/p/exec", "pods", "{}");
        req.extensions_mut().insert(LongRunning(true));
        let (_, events) = run(layer, &sink, req).await;
        assert_eq!(events.len(), 3, "ResponseStarted and ResponseComplete");
        assert!(
            events[1..]
                .iter()
                .all(|e| e.level == "Metadata" && e.request_object.is_none())
        );
    }

    /// An embedder that inserts no `RequestMeta` gives the layer no way to tell a Secret's
    /// body from any other: none is recorded, whatever the level.
    #[tokio::test]
    async fn a_request_nobody_described_records_no_body() {
        let sink = Arc::new(Recorder::default());
        let layer = AuditLayer::from_arc(sink.clone()).with_level(AuditLevel::RequestResponse);
        let mut req = post(
            "/api/v1/namespaces/default/secrets",
            "secrets",
            "{\"stringData\":{\"password\":\"hunter2\"}}",
        );
        req.extensions_mut().remove::<RequestMeta>();
        let (body, events) = run(layer, &sink, req).await;
        assert!(body.ends_with(b"\"hunter2\"}}}"), "forwarded unchanged");
        assert_eq!(events[0].level, "Metadata");
        let line = serde_json::to_string(&events[0]).unwrap();
        assert!(!line.contains("hunter2"), "{line}");
    }

    #[tokio::test]
    async fn only_a_request_forwarded_as_an_upgrade_stays_at_metadata() {
        let sink = Arc::new(Recorder::default());
        let layer = AuditLayer::from_arc(sink.clone()).with_level(AuditLevel::RequestResponse);
        // `Upgrade` alone: ForwardService forwards this as an ordinary request, body and all,
        // so the event records the body.
        let mut req = post(
            "/api/v1/namespaces/default/configmaps",
            "configmaps",
            "{\"data\":{}}",
        );
        req.headers_mut()
            .insert(http::header::UPGRADE, HeaderValue::from_static("x"));
        let (_, events) = run(layer.clone(), &sink, req).await;
        assert_eq!(events[0].level, "RequestResponse");
        assert_eq!(
            events[0].request_object.as_ref().map(|o| o.get()),
            Some("{\"data\":{}}")
        );
        // `Connection: upgrade` too: forwarded as an upgrade, no body is recorded.
        let mut req = post(
            "/api/v1/namespaces/default/configmaps",
            "configmaps",
            "{\"data\":{}}",
        );
        req.headers_mut()
            .insert(http::header::UPGRADE, HeaderValue::from_static("x"));
        req.headers_mut().insert(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        );
        let (_, events) = run(layer, &sink, req).await;
        assert_eq!(events[1].level, "Metadata");
        assert!(events[1].request_object.is_none());
    }

    #[tokio::test]
    async fn unrecordable_bodies_are_annotated() {
        let sink = Arc::new(Recorder::default());
        let layer = AuditLayer::from_arc(sink.clone())
            .with_level(AuditLevel::RequestResponse)
            .with_max_recorded_body(8);
        let mut req = post(
            "/api/v1/namespaces/default/configmaps",
            "configmaps",
            "{\"data\":{}}",
        );
        req.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
        );
        let (_, events) = run(layer, &sink, req).await;
        let e = &events[0];
        assert_eq!(e.level, "RequestResponse");
        assert!(e.request_object.is_none() && e.response_object.is_none());
        assert_eq!(
            e.annotations[REQUEST_OBJECT_ANNOTATION],
            "omitted: not JSON"
        );
        assert_eq!(
            e.annotations[RESPONSE_OBJECT_ANNOTATION],
            "omitted: larger than the audit body limit"
        );
    }

    #[tokio::test]
    async fn a_disabled_sink_gets_no_events_but_the_audit_id_is_still_set() {
        struct Off(Recorder);
        impl AuditSink for Off {
            fn record(&self, event: &AuditEvent) {
                self.0.record(event);
            }
            fn enabled(&self) -> bool {
                false
            }
        }
        let sink = Arc::new(Off(Recorder::default()));
        let layer = AuditLayer::from_arc(sink.clone()).with_level(AuditLevel::RequestResponse);
        let res = layer
            .layer(echo())
            .oneshot(post(
                "/api/v1/namespaces/default/configmaps",
                "configmaps",
                "{}",
            ))
            .await
            .unwrap();
        assert!(res.headers().contains_key("audit-id"));
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(!body.is_empty());
        assert!(sink.0.events().is_empty());
    }

    #[tokio::test]
    async fn kubegates_own_statuses_are_recorded_with_their_reason_and_message() {
        // As kube's LogResponseObject: at Metadata level already, a Status response records
        // status, message, reason, details and code, exactly as the body says them.
        struct Nobody;
        impl Authenticator for Nobody {
            type Scope = ();
            type Future = std::future::Ready<Result<Authenticated<()>, AuthnError>>;
            fn authenticate(&self, _: &http::request::Parts) -> Self::Future {
                std::future::ready(Err(AuthnError::Unauthorized))
            }
        }
        struct DenyAll;
        impl crate::Authorizer for DenyAll {
            type Future = std::future::Ready<crate::Decision>;
            fn authorize(&self, _: &http::request::Parts) -> Self::Future {
                std::future::ready(crate::Decision::Deny {
                    status: Status::forbidden(
                        "",
                        "pods",
                        "",
                        "User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"",
                    ),
                    reason: String::new(),
                })
            }
        }
        let inner = || {
            tower::service_fn(|_req: Request<AuditBody<Full<Bytes>>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
            })
        };
        let sink = Arc::new(Recorder::default());
        let res = AuditLayer::from_arc(sink.clone())
            .layer(AuthnLayer::new(Jane).layer(crate::AuthzLayer::new(DenyAll).layer(inner())))
            .oneshot(request("/api/v1/namespaces/default/pods"))
            .await
            .unwrap();
        recorded_as_the_body_says(res, &sink, 403).await;
        let sink = Arc::new(Recorder::default());
        let res = AuditLayer::from_arc(sink.clone())
            .layer(AuthnLayer::new(Nobody).layer(crate::AuthzLayer::new(DenyAll).layer(inner())))
            .oneshot(request("/api/v1/namespaces/default/pods"))
            .await
            .unwrap();
        recorded_as_the_body_says(res, &sink, 401).await;
    }

    /// Asserts that the one event `sink` holds has the response's Status fields.
    async fn recorded_as_the_body_says<B: http_body::Body>(
        res: Response<B>,
        sink: &Recorder,
        code: u16,
    ) where
        B::Error: fmt::Debug,
    {
        assert_eq!(res.status(), code);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let events = sink.events();
        assert_eq!(events.len(), 1);
        let recorded = serde_json::to_value(events[0].response_status.as_ref().unwrap()).unwrap();
        assert!(recorded["reason"].is_string() && recorded["message"].is_string());
        for field in ["status", "message", "reason", "details", "code"] {
            assert_eq!(recorded[field], body[field], "{field} of {body}");
        }
        assert_eq!(recorded["metadata"], serde_json::json!({}));
    }

    /// A complete event for sink tests.
    pub(crate) fn sample_event() -> AuditEvent {
        AuditEvent {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: "Metadata",
            audit_id: "id".into(),
            stage: "ResponseComplete",
            request_uri: "/api".into(),
            verb: "get".into(),
            user: UserInfo {
                username: "jane".into(),
                ..UserInfo::default()
            },
            impersonated_user: None,
            source_ips: vec!["127.0.0.1".into()],
            user_agent: None,
            object_ref: None,
            response_status: Some(ResponseStatus::code(200)),
            request_object: None,
            response_object: None,
            request_received_timestamp: MicroTime::from(
                time::macros::datetime!(2026-01-01 00:00 UTC),
            ),
            stage_timestamp: MicroTime::from(
                time::macros::datetime!(2026-01-01 00:00:00.000001 UTC),
            ),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn event_json_uses_audit_k8s_io_v1_field_names() {
        let e = sample_event();
        let sink = JsonLinesSink::new(Vec::new());
        sink.record(&e);
        let line = sink.into_inner();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"level\":\"Metadata\",\"auditID\":\"id\",\"stage\":\"ResponseComplete\",\"requestURI\":\"/api\",\"verb\":\"get\",\"user\":{\"username\":\"jane\"},\"sourceIPs\":[\"127.0.0.1\"],\"responseStatus\":{\"metadata\":{},\"code\":200},\"requestReceivedTimestamp\":\"2026-01-01T00:00:00.000000Z\",\"stageTimestamp\":\"2026-01-01T00:00:00.000001Z\"}\n"
        );
    }
}
