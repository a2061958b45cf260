//! Upgrades: pod `exec` over WebSocket (`v5.channel.k8s.io`/`v4.channel.k8s.io`, no real
//! process) and a raw upgrade echo.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::body::{self, Body};
use crate::request::Query;
use crate::status::Status;

/// The line every exec prints on stdout first, followed by the command.
pub const EXEC_STDOUT_PREFIX: &str = "kubegate-testkit exec:";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

/// apimachinery `httpstream.IsUpgradeRequest`: any `Connection` value containing `upgrade`.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.to_ascii_lowercase().contains("upgrade"))
    })
}

fn is_websocket(headers: &HeaderMap) -> bool {
    is_upgrade(headers)
        && headers
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .collect()
}

/// Pod exec. The pod and container were checked by the caller.
pub(crate) fn exec(mut req: Request<Incoming>, query: &Query) -> Response<Body> {
    if !is_upgrade(req.headers()) {
        return body::status(&Status::bad_request("Upgrade request required"), false);
    }
    if !is_websocket(req.headers()) {
        // SPDY/3.1 is not implemented: answer like a server with no common protocol.
        return body::text(
            StatusCode::FORBIDDEN,
            "unable to upgrade: unable to negotiate protocol: only websocket (v5.channel.k8s.io, v4.channel.k8s.io) is supported\n",
        );
    }
    let offered = offered_protocols(req.headers());
    let Some(protocol) = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p))
    else {
        return body::text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: no supported websocket subprotocol offered\n",
        );
    };
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return body::text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let commands: Vec<String> = query.all("command").map(str::to_owned).collect();
    let stdin = query.flag("stdin");
    let stdout = query.flag("stdout");
    let v5 = protocol.starts_with("v5");
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        // The client going away mid-session is not an error for a fake process.
        let _ = run_exec(ws, &commands, stdin, stdout, v5).await;
    });
    let mut resp = body::response(StatusCode::SWITCHING_PROTOCOLS, "", body::empty());
    let h = resp.headers_mut();
    h.remove(http::header::CONTENT_TYPE);
    h.remove(http::header::CACHE_CONTROL);
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

async fn run_exec<S>(
    mut ws: WebSocketStream<S>,
    commands: &[String],
    stdin: bool,
    stdout: bool,
    v5: bool,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if stdout {
        let line = format!("{EXEC_STDOUT_PREFIX} {}\n", commands.join(" "));
        ws.send(frame(STDOUT, line.as_bytes())).await?;
    }
    if stdin {
        while let Some(msg) = ws.next().await {
            match msg? {
                Message::Binary(data) => match data.first() {
                    Some(&STDIN) if data.len() > 1 && stdout => {
                        ws.send(frame(STDOUT, &data[1..])).await?;
                    }
                    // v5 close signal for stdin: [255, 0].
                    Some(&CLOSE) if v5 && data.get(1) == Some(&STDIN) => break,
                    _ => {}
                },
                Message::Close(_) => return Ok(()),
                _ => {}
            }
        }
    }
    ws.send(frame(ERROR, br#"{"metadata":{},"status":"Success"}"#))
        .await?;
    // client-go only treats a 1000 Normal Closure as end of stream (1005 is an error).
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
    .await?;
    // Drain until the client acknowledges the close.
    while let Some(Ok(_)) = ws.next().await {}
    Ok(())
}

/// The raw upgrade echo: `101` with the requested `Upgrade` token, then every byte echoed.
pub(crate) fn upgrade_echo(mut req: Request<Incoming>) -> Response<Body> {
    if !is_upgrade(req.headers()) {
        return body::status(&Status::bad_request("Upgrade request required"), false);
    }
    let proto = req
        .headers()
        .get(UPGRADE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("echo"));
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
    });
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    resp.headers_mut().insert(UPGRADE, proto);
    resp
}
