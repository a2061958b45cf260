//! An [`AuditEvent`] as a JSON line, written by hand.
//!
//! Every forwarded request records an event, and going through serde's data model costs one
//! writer call per key, quote and value: in `proxy_load` serializing a 750-byte event took ≈
//! 10,000 instructions, a tenth of the gateway's user-space work per request. This writer emits
//! the fixed parts of the event as literals and each string with one scan, and produces the very
//! bytes `serde_json::to_vec` produces from the `Serialize` derive, which stays the reference:
//! the tests hold the two to each other.

use std::collections::BTreeMap;

use super::{AuditEvent, ResponseStatus, UserInfo};
use crate::ext::ObjectRef;
use crate::status::StatusDetails;

impl AuditEvent {
    /// About as many bytes as [`write_json_line`](Self::write_json_line) writes (at least that
    /// many for the usual event): the fixed part generously, plus the variable-length fields
    /// that can be large. A queue's bound, not a promise.
    pub(crate) fn estimated_json_len(&self) -> usize {
        const FIXED: usize = 640;
        let object =
            |o: &Option<Box<serde_json::value::RawValue>>| o.as_ref().map_or(0, |o| o.get().len());
        let annotations: usize = self
            .annotations
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum();
        FIXED
            + self.request_uri.len()
            + self.user_agent.as_ref().map_or(0, String::len)
            + self.source_ips.iter().map(|ip| ip.len() + 3).sum::<usize>()
            + annotations
            + object(&self.request_object)
            + object(&self.response_object)
    }

    /// Appends the event as one JSON line (kube's `--audit-log-format=json`) to `out`: the bytes
    /// `serde_json::to_vec(self)` gives, then `\n`.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        out.reserve(768);
        if self.kind == "Event" && self.api_version == "audit.k8s.io/v1" {
            out.extend_from_slice(b"{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\"");
        } else {
            out.extend_from_slice(b"{\"kind\":");
            string(out, self.kind);
            out.extend_from_slice(b",\"apiVersion\":");
            string(out, self.api_version);
        }
        out.extend_from_slice(b",\"level\":");
        known(out, self.level, &LEVELS);
        out.extend_from_slice(b",\"auditID\":");
        string(out, &self.audit_id);
        out.extend_from_slice(b",\"stage\":");
        known(out, self.stage, &STAGES);
        out.extend_from_slice(b",\"requestURI\":");
        string(out, &self.request_uri);
        out.extend_from_slice(b",\"verb\":");
        string(out, &self.verb);
        out.extend_from_slice(b",\"user\":");
        user_info(out, &self.user);
        if let Some(u) = &self.impersonated_user {
            out.extend_from_slice(b",\"impersonatedUser\":");
            user_info(out, u);
        }
        out.extend_from_slice(b",\"sourceIPs\":");
        strings(out, &self.source_ips);
        if let Some(ua) = &self.user_agent {
            out.extend_from_slice(b",\"userAgent\":");
            string(out, ua);
        }
        if let Some(o) = &self.object_ref {
            out.extend_from_slice(b",\"objectRef\":");
            object_ref(out, o);
        }
        if let Some(s) = &self.response_status {
            out.extend_from_slice(b",\"responseStatus\":");
            response_status(out, s);
        }
        if let Some(raw) = &self.request_object {
            out.extend_from_slice(b",\"requestObject\":");
            out.extend_from_slice(raw.get().as_bytes());
        }
        if let Some(raw) = &self.response_object {
            out.extend_from_slice(b",\"responseObject\":");
            out.extend_from_slice(raw.get().as_bytes());
        }
        // A MicroTime's digits and punctuation never need escaping.
        out.extend_from_slice(b",\"requestReceivedTimestamp\":\"");
        self.request_received_timestamp.write(out);
        out.extend_from_slice(b"\",\"stageTimestamp\":\"");
        self.stage_timestamp.write(out);
        out.push(b'"');
        if !self.annotations.is_empty() {
            out.extend_from_slice(b",\"annotations\":");
            string_map(out, &self.annotations);
        }
        out.extend_from_slice(b"}\n");
    }
}

/// The audit levels and stages, quoted: written without a scan for escapes.
const LEVELS: [(&str, &[u8]); 4] = [
    ("Metadata", b"\"Metadata\""),
    ("RequestResponse", b"\"RequestResponse\""),
    ("Request", b"\"Request\""),
    ("None", b"\"None\""),
];
const STAGES: [(&str, &[u8]); 4] = [
    ("ResponseComplete", b"\"ResponseComplete\""),
    ("ResponseStarted", b"\"ResponseStarted\""),
    ("RequestReceived", b"\"RequestReceived\""),
    ("Panic", b"\"Panic\""),
];

/// `s` as a JSON string: its quoted form from `table` when it is one of the table's values,
/// otherwise escaped as any string.
fn known(out: &mut Vec<u8>, s: &str, table: &[(&str, &[u8])]) {
    match table.iter().find(|(value, _)| *value == s) {
        Some((_, quoted)) => out.extend_from_slice(quoted),
        None => string(out, s),
    }
}

fn user_info(out: &mut Vec<u8>, u: &UserInfo) {
    out.extend_from_slice(b"{\"username\":");
    string(out, &u.username);
    if !u.uid.is_empty() {
        out.extend_from_slice(b",\"uid\":");
        string(out, &u.uid);
    }
    if !u.groups.is_empty() {
        out.extend_from_slice(b",\"groups\":");
        strings(out, &u.groups);
    }
    if !u.extra.is_empty() {
        out.extend_from_slice(b",\"extra\":");
        map(out, &u.extra, |out, v| strings(out, v));
    }
    out.push(b'}');
}

fn object_ref(out: &mut Vec<u8>, o: &ObjectRef) {
    out.push(b'{');
    for (i, (key, value)) in o.fields().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // The keys are fixed camelCase names: nothing to escape.
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        string(out, value);
    }
    out.push(b'}');
}

fn response_status(out: &mut Vec<u8>, s: &ResponseStatus) {
    out.extend_from_slice(b"{\"metadata\":");
    string_map(out, &s.metadata);
    if let Some(status) = s.status {
        out.extend_from_slice(b",\"status\":");
        string(out, status);
    }
    if let Some(message) = &s.message {
        out.extend_from_slice(b",\"message\":");
        string(out, message);
    }
    if let Some(reason) = &s.reason {
        out.extend_from_slice(b",\"reason\":");
        string(out, reason);
    }
    if let Some(details) = &s.details {
        out.extend_from_slice(b",\"details\":");
        status_details(out, details);
    }
    out.extend_from_slice(b",\"code\":");
    integer(out, i64::from(s.code));
    out.push(b'}');
}

/// `details` of a Status, as its `Serialize` derive writes it (empty fields left out).
fn status_details(out: &mut Vec<u8>, d: &StatusDetails) {
    let mut fields = Fields::new(out);
    for (key, value) in [
        (&b"\"name\":"[..], &d.name),
        (b"\"group\":", &d.group),
        (b"\"kind\":", &d.kind),
        (b"\"uid\":", &d.uid),
    ] {
        if !value.is_empty() {
            string(fields.key(key), value);
        }
    }
    if !d.causes.is_empty() {
        let out = fields.key(b"\"causes\":");
        out.push(b'[');
        for (i, cause) in d.causes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let mut cause_fields = Fields::new(out);
            for (key, value) in [
                (&b"\"reason\":"[..], &cause.reason),
                (b"\"message\":", &cause.message),
                (b"\"field\":", &cause.field),
            ] {
                if !value.is_empty() {
                    string(cause_fields.key(key), value);
                }
            }
            cause_fields.end();
        }
        out.push(b']');
    }
    if d.retry_after_seconds != 0 {
        integer(
            fields.key(b"\"retryAfterSeconds\":"),
            i64::from(d.retry_after_seconds),
        );
    }
    fields.end();
}

/// A JSON object whose fields may each be left out: writes `{`, a `,` before every key but the
/// first, and `}`.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Fields<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Fields { out, first: true }
    }

    /// Writes `key` (quoted, with its colon) and returns the buffer for its value.
    fn key(&mut self, key: &[u8]) -> &mut Vec<u8> {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.extend_from_slice(key);
        self.out
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// `n` in decimal, as serde_json writes an integer.
fn integer(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    let mut n = n.unsigned_abs();
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn string_map<K: AsRef<str>, V: AsRef<str>>(out: &mut Vec<u8>, entries: &BTreeMap<K, V>) {
    map(out, entries, |out, v| string(out, v.as_ref()));
}

/// A JSON object from a map with string keys, each value written by `value`.
fn map<K: AsRef<str>, V>(
    out: &mut Vec<u8>,
    entries: &BTreeMap<K, V>,
    value: impl Fn(&mut Vec<u8>, &V),
) {
    out.push(b'{');
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k.as_ref());
        out.push(b':');
        value(out, v);
    }
    out.push(b'}');
}

fn strings(out: &mut Vec<u8>, values: &[String]) {
    out.push(b'[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, v);
    }
    out.push(b']');
}

/// A JSON string as serde_json's compact formatter writes it: `"` and `\` escaped, the control
/// characters that have a short escape get it, the others `\u00XX` in lowercase hex; everything
/// else (DEL and non-ASCII included) as is. The runs between escapes (almost always the whole
/// string) are found eight bytes at a time and copied whole.
fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run = 0;
    while let Some(at) = next_escape(bytes, run) {
        out.extend_from_slice(&bytes[run..at]);
        run = at + 1;
        let b = bytes[at];
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
                continue;
            }
        };
        out.extend_from_slice(short);
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// The first index at or after `from` whose byte needs escaping (`"`, `\`, below 0x20).
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Nonzero in the high bit of the lowest byte of `x` below `n` (and maybe of bytes above
    // it: the subtraction borrows upwards only), zero if no byte is.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    let hits = |chunk: &[u8]| {
        let mut lanes = [0u8; 8];
        lanes.copy_from_slice(chunk);
        let x = u64::from_le_bytes(lanes);
        below(x, 0x20)
            | below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1)
    };
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let found = hits(chunk);
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    // A tail of one to seven bytes after at least eight: the last eight bytes once more, less
    // the ones already checked (they hold no hit, so no borrow reaches the rest).
    let len = bytes.len();
    if i < len && from + 8 <= len {
        let start = len - 8;
        let found = hits(&bytes[start..]) & (u64::MAX << (8 * (i - start)));
        return (found != 0).then(|| start + (found.trailing_zeros() / 8) as usize);
    }
    bytes
        .get(i..)?
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .map(|p| i + p)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    use super::*;
    use crate::audit::MicroTime;
    use crate::audit::tests::sample_event;
    use crate::status::{Status, StatusCause};

    fn by_hand(e: &AuditEvent) -> String {
        let mut out = Vec::new();
        e.write_json_line(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn by_serde(e: &AuditEvent) -> String {
        let mut line = serde_json::to_string(e).unwrap();
        line.push('\n');
        line
    }

    fn full_event() -> AuditEvent {
        let mut e = sample_event();
        e.user = UserInfo {
            username: "system:serviceaccount:ns:sa".into(),
            uid: "0f1e".into(),
            groups: vec!["system:authenticated".into(), "team \"a\"".into()],
            extra: BTreeMap::from([
                (
                    "scopes.example.com/x".into(),
                    vec!["a".into(), "b\\c".into()],
                ),
                ("empty".into(), vec![]),
            ]),
        };
        e.impersonated_user = Some(UserInfo {
            username: "jane".into(),
            ..UserInfo::default()
        });
        e.source_ips = vec!["10.0.0.1".into(), "::1".into()];
        e.user_agent = Some("kubectl/v1.31.0 (linux/amd64) kubernetes/abc\t\u{1}\u{7f}é".into());
        e.object_ref = Some(ObjectRef::new("pods", "default", "web-0", "", "v1", "exec"));
        e.response_status = Some(ResponseStatus {
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            status: Some("Fail\"ure"),
            message: Some("Connection closed early\n".into()),
            reason: Some("Forbid\u{1}den".into()),
            details: Some(StatusDetails {
                name: "web-0".into(),
                group: "apps\\x".into(),
                kind: "pods".into(),
                uid: "0f1e".into(),
                causes: vec![
                    StatusCause {
                        reason: "FieldValueInvalid".into(),
                        message: "bad \"value\"".into(),
                        field: "spec.x".into(),
                    },
                    StatusCause::default(),
                    StatusCause {
                        field: "metadata.name".into(),
                        ..StatusCause::default()
                    },
                ],
                retry_after_seconds: i32::MIN,
            }),
            code: 65535,
        });
        e.request_object =
            Some(RawValue::from_string(r#"{"a":[1,2,{"b":"\u0001"}]}"#.into()).unwrap());
        e.response_object = Some(RawValue::from_string("null".into()).unwrap());
        e.annotations = BTreeMap::from([
            ("authorization.k8s.io/decision".into(), "allow".into()),
            (
                "authorization.k8s.io/reason".into(),
                "RBAC: allowed by ClusterRoleBinding \"x\" of ClusterRole \"y\" to User \"z\""
                    .into(),
            ),
        ]);
        e
    }

    #[test]
    fn the_fixed_shapes_match_serde_json_byte_for_byte() {
        let sparse = sample_event();
        let mut no_status = sample_event();
        no_status.response_status = None;
        no_status.object_ref = Some(ObjectRef::default());
        let mut closed_early = sample_event();
        closed_early.response_status = Some(ResponseStatus::connection_closed_early());
        // kubegate's own Status answers, as the audit layer records them.
        let own_statuses = [
            Status::unauthorized(),
            Status::forbidden("apps", "deployments", "web", "User \"jane\" cannot get"),
            Status::forbidden("", "", "", "User \"jane\" cannot get path \"/x\""),
            Status::internal_error("boom <&>"),
            Status::too_many_requests("slow down", 3),
            Status::timeout("upstream", 0),
            Status::failure(502, ""),
        ]
        .map(|status| {
            let mut e = sample_event();
            e.response_status = Some(ResponseStatus::from(&status));
            e
        });
        let mut one_field = sample_event();
        one_field.object_ref = Some(ObjectRef::new("", "", "", "", "", "log"));
        // Other kinds, levels and stages than kube's take the escaping path.
        let mut unusual = sample_event();
        unusual.kind = "Ev\"ent";
        unusual.api_version = "audit.k8s.io/v2";
        unusual.level = "Meta\ndata";
        unusual.stage = "Response";
        let mut every_level_and_stage = Vec::new();
        for (level, stage) in LEVELS.iter().zip(STAGES.iter()) {
            let mut e = sample_event();
            e.level = level.0;
            e.stage = stage.0;
            every_level_and_stage.push(e);
        }
        for e in [
            sparse,
            no_status,
            closed_early,
            one_field,
            full_event(),
            unusual,
        ]
        .into_iter()
        .chain(own_statuses)
        .chain(every_level_and_stage)
        {
            assert_eq!(by_hand(&e), by_serde(&e));
        }
    }

    #[test]
    fn next_escape_finds_the_first_byte_to_escape_in_every_lane() {
        let plain = b"abcdefghijklmnopqrstuvwxyz\x7f\xc3\xa9~ !#";
        for at in 0..plain.len() {
            for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                let mut bytes = plain.to_vec();
                bytes[at] = special;
                // A second one later must not hide the first.
                if at + 3 < bytes.len() {
                    bytes[at + 3] = b'"';
                }
                for from in 0..=at {
                    assert_eq!(next_escape(&bytes, from), Some(at), "{bytes:?} from {from}");
                }
            }
            assert_eq!(next_escape(plain, at), None);
        }
    }

    #[test]
    fn every_byte_value_is_escaped_as_serde_json_escapes_it() {
        let mut e = sample_event();
        e.request_uri = (0u8..=0x7f).map(char::from).collect();
        e.verb = "\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}".into();
        assert_eq!(by_hand(&e), by_serde(&e));
    }

    proptest! {
        /// Escapes at every offset of strings around the eight-byte steps (and their tail).
        #[test]
        fn strings_match_serde_json(s in "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é]{0,40}") {
            let mut out = Vec::new();
            string(&mut out, &s);
            prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn arbitrary_events_match_serde_json(
            strings in proptest::collection::vec(any::<String>(), 12),
            groups in proptest::collection::vec("[a-z\"\\\\\u{0}-\u{1f}]{0,6}", 0..3),
            code in any::<u16>(),
            flags in any::<[bool; 4]>(),
            status_texts in proptest::collection::vec("[a-z\"\\\\\u{0}-\u{1f}é]{0,6}", 9),
            status_flags in any::<[bool; 4]>(),
            retry_after_seconds in any::<i32>(),
            seconds in -377_705_116_800i64..253_402_300_800,
            nanos in 0u32..1_000_000_000,
        ) {
            let mut e = full_event();
            e.audit_id = strings[0].as_str().into();
            e.request_uri = strings[1].clone();
            e.verb = strings[2].clone().into();
            e.user.username = strings[3].clone();
            e.user.uid = strings[4].clone();
            e.user.groups = groups.clone();
            e.user.extra = BTreeMap::from([(strings[5].clone(), groups)]);
            e.source_ips = vec![strings[6].clone()];
            e.user_agent = flags[0].then(|| strings[7].clone());
            e.object_ref = flags[1].then(|| ObjectRef::new("", &strings[9], &strings[8], "", "", ""));
            // Every year `time` holds, including the ones outside four digits.
            e.request_received_timestamp = MicroTime::from(
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(seconds) * 1_000_000_000 + i128::from(nanos)).unwrap(),
            );
            let causes = e.user.groups.len();
            e.response_status = flags[2].then(|| {
                // Empty strings and a zero retry stand for the fields kube leaves out.
                let t = |i: usize| status_texts[i].clone();
                ResponseStatus {
                    status: status_flags[0].then_some("Failure"),
                    message: status_flags[1].then(|| t(0).into()),
                    reason: status_flags[2].then(|| t(1).into()),
                    details: status_flags[3].then(|| StatusDetails {
                        name: t(2),
                        group: t(3),
                        kind: t(4),
                        uid: t(5),
                        causes: (0..causes)
                            .map(|i| StatusCause {
                                reason: t(6 + i % 3),
                                message: t(6 + (i + 1) % 3),
                                field: t(6 + (i + 2) % 3),
                            })
                            .collect(),
                        retry_after_seconds,
                    }),
                    ..ResponseStatus::code(code)
                }
            });
            if flags[3] {
                e.annotations = BTreeMap::from([(strings[10].clone().into(), strings[11].clone().into())]);
            } else {
                e.annotations.clear();
            }
            prop_assert_eq!(by_hand(&e), by_serde(&e));
        }
    }
}
