//! Criterion benches for the audit path's pure parts: an event as one JSON line (what the
//! audit writer thread does for every request), its two timestamps, and reading the clock for
//! one (what the request path does, twice per event).
//!
//! Run: `cargo bench --bench audit`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubegate::proxy::audit::{AuditEvent, ResponseStatus, UserInfo};
use kubegate::proxy::{MicroTime, ObjectRef};

/// The event of a `kubectl get configmap` through a cluster, at `Metadata` level: as the
/// reference gateway records it for the load bench's requests.
fn event() -> AuditEvent {
    AuditEvent {
        kind: "Event",
        api_version: "audit.k8s.io/v1",
        level: "Metadata",
        audit_id: "5c1b0d6e-9f7a-4b7e-8a53-2f4d7f0c9e21".into(),
        stage: "ResponseComplete",
        request_uri: "/kubernetes/cluster/bench/api/v1/namespaces/default/configmaps/small"
            .into(),
        verb: "get".into(),
        user: UserInfo {
            username: "bench".into(),
            uid: "bench".into(),
            groups: vec!["system:authenticated".into()],
            extra: BTreeMap::new(),
        },
        impersonated_user: None,
        source_ips: vec!["127.0.0.1".into()],
        user_agent: Some("kubectl/v1.34.1 (linux/amd64) kubernetes/93248f9".into()),
        object_ref: Some(ObjectRef::new(
            "configmaps",
            "default",
            "small",
            "",
            "v1",
            "",
        )),
        response_status: Some(ResponseStatus::code(200)),
        request_object: None,
        response_object: None,
        request_received_timestamp: MicroTime::from_unix_micros(1_796_166_309_000_042),
        stage_timestamp: MicroTime::from_unix_micros(1_796_166_309_000_913),
        annotations: BTreeMap::from([
            (
                "authorization.k8s.io/decision".into(),
                "allow".into(),
            ),
            (
                "authorization.k8s.io/reason".into(),
                "RBAC: allowed by ClusterRoleBinding \"bench-reads\" of ClusterRole \"reader\" to User \"bench\"".into(),
            ),
        ]),
    }
}

fn json_line(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit");
    let event = event();
    let mut line = Vec::with_capacity(1024);
    event.write_json_line(&mut line);
    g.throughput(Throughput::Bytes(line.len() as u64));
    g.bench_function("json_line", |b| {
        b.iter(|| {
            line.clear();
            black_box(&event).write_json_line(&mut line);
            black_box(line.len())
        })
    });
    g.finish();
}

fn micro_time(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit/micro_time");
    let t = MicroTime::from_unix_micros(1_796_166_309_000_042);
    let mut out = Vec::with_capacity(32);
    g.bench_function("write", |b| {
        b.iter(|| {
            out.clear();
            black_box(t).write(&mut out);
            black_box(out.len())
        })
    });
    g.bench_function("now", |b| b.iter(|| black_box(MicroTime::now())));
    g.finish();
}

criterion_group!(benches, json_line, micro_time);
criterion_main!(benches);
