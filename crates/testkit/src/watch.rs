//! Watch responses: `{"type":..,"object":..}\n` JSON events, one chunk (flushed) per event.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::body::{self, Body};
use crate::resources::RESOURCES;
use crate::selector::Selector;
use crate::status::Status;
use crate::store::{Event, EventType, StoredObject, WatchStart};
use crate::table::{IncludeObject, table};

/// What a watch filters and how it encodes.
pub(crate) struct WatchParams {
    pub(crate) resource: usize,
    pub(crate) namespace: Option<String>,
    pub(crate) selector: Selector,
    pub(crate) table: Option<IncludeObject>,
    /// Length-delimited protobuf `WatchEvent`s instead of JSON lines.
    pub(crate) protobuf: bool,
    pub(crate) timeout: Option<Duration>,
    /// `allowWatchBookmarks`.
    pub(crate) bookmarks: bool,
    /// `sendInitialEvents=true`: end the initial ADDED events with an
    /// `k8s.io/initial-events-end` BOOKMARK.
    pub(crate) initial_events_end: bool,
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
}

impl WatchParams {
    fn wants(&self, e: &Event) -> bool {
        if e.kind == EventType::Bookmark {
            return self.bookmarks && self.table.is_none();
        }
        e.resource == self.resource
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == e.object.namespace())
            && self.selector.matches(&e.object)
    }
}

struct State {
    params: WatchParams,
    backlog: VecDeque<Arc<Event>>,
    live: tokio::sync::broadcast::Receiver<Arc<Event>>,
    deadline: Option<tokio::time::Instant>,
    first: bool,
    done: bool,
    /// The resourceVersion of the pending initial-events-end bookmark.
    initial_end: Option<u64>,
}

fn bookmark(resource: usize, rv: u64, initial_end: bool) -> Arc<Event> {
    let def = &RESOURCES[resource];
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta});
    let json = Bytes::from(serde_json::to_vec(&object).unwrap_or_default());
    Arc::new(Event {
        rv,
        kind: EventType::Bookmark,
        resource,
        object: Arc::new(StoredObject {
            value: object,
            json,
        }),
    })
}

fn encode(state: &mut State, e: &Event) -> Bytes {
    if state.params.protobuf {
        return Bytes::from(crate::protobuf_encode::encode_watch_frame(
            e.kind.as_str(),
            &e.object.value,
        ));
    }
    match state.params.table {
        None => {
            let mut b = BytesMut::with_capacity(e.object.json.len() + 32);
            b.put_slice(b"{\"type\":\"");
            b.put_slice(e.kind.as_str().as_bytes());
            b.put_slice(b"\",\"object\":");
            b.put_slice(&e.object.json);
            b.put_slice(b"}\n");
            b.freeze()
        }
        Some(include) => {
            let t = table(
                state.params.resource,
                std::slice::from_ref(&e.object),
                include,
                &json!({"resourceVersion": e.rv.to_string()}),
                state.first,
            );
            state.first = false;
            let mut v = serde_json::to_vec(&json!({"type": e.kind.as_str(), "object": t}))
                .unwrap_or_default();
            v.push(b'\n');
            Bytes::from(v)
        }
    }
}

fn error_event(protobuf: bool, status: &Status) -> Bytes {
    if protobuf {
        return Bytes::from(crate::protobuf_encode::encode_watch_frame(
            "ERROR",
            &status.to_value(),
        ));
    }
    let mut v = serde_json::to_vec(&json!({"type": "ERROR", "object": status.to_value()}))
        .unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

async fn next_chunk(mut state: State) -> Option<(Bytes, State)> {
    if state.done {
        return None;
    }
    while let Some(e) = state.backlog.pop_front() {
        if state.params.wants(&e) {
            let chunk = encode(&mut state, &e);
            return Some((chunk, state));
        }
    }
    if let Some(rv) = state.initial_end.take() {
        let event = bookmark(state.params.resource, rv, true);
        let chunk = encode(&mut state, &event);
        return Some((chunk, state));
    }
    loop {
        let sleep = async {
            match state.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let received = tokio::select! {
            r = state.live.recv() => r,
            () = sleep => return None,
            _ = state.params.shutdown.changed() => return None,
        };
        match received {
            Ok(e) if e.kind == EventType::Bookmark && state.params.wants(&e) => {
                let event = bookmark(state.params.resource, e.rv, false);
                let chunk = encode(&mut state, &event);
                return Some((chunk, state));
            }
            Ok(e) if state.params.wants(&e) => {
                let chunk = encode(&mut state, &e);
                return Some((chunk, state));
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {
                // Events were dropped for this watcher: tell it to relist, like a compacted watch.
                state.done = true;
                let chunk = error_event(
                    state.params.protobuf,
                    &Status::expired("watch fell too far behind; relist"),
                );
                return Some((chunk, state));
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

/// The streamed watch body.
pub(crate) fn body(start: WatchStart, params: WatchParams) -> Body {
    let deadline = params.timeout.map(|t| tokio::time::Instant::now() + t);
    let initial_end = (params.initial_events_end && params.bookmarks).then_some(start.rv);
    let state = State {
        params,
        backlog: start.backlog.into(),
        live: start.live,
        deadline,
        first: true,
        done: false,
        initial_end,
    };
    body::stream(stream::unfold(state, next_chunk))
}
