//! Upgrades: pod `exec` over WebSocket (`v5.channel.k8s.io`/`v4.channel.k8s.io`) or SPDY/3.1
//! (`v4.channel.k8s.io`), with no real process; pod `portforward` over SPDY/3.1
//! (`portforward.k8s.io`) or SPDY tunnelled in WebSocket messages, every forwarded connection
//! echoed; and a raw upgrade echo.

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

/// The Status an exec ends with: `Success`, unless the command's last argument is `exit N`
/// (N in 1..=255, as in `kubectl exec p -- sh -c 'exit 3'`), which fails as kubelet reports a
/// non-zero exit: reason `NonZeroExitCode`, the code as an `ExitCode` cause (kubectl exits
/// with it).
fn exit_status(commands: &[String]) -> Vec<u8> {
    let code = commands
        .last()
        .and_then(|c| c.strip_prefix("exit "))
        .and_then(|n| n.trim().parse::<u8>().ok())
        .filter(|&n| n != 0);
    match code {
        None => br#"{"metadata":{},"status":"Success"}"#.to_vec(),
        // kubelet's `json.Marshal` of the Status: Go's field order, empty fields left out.
        Some(code) => {
            let message = format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                commands.join(" ")
            );
            format!(
                r#"{{"metadata":{{}},"status":"Failure","message":{},"reason":"NonZeroExitCode","details":{{"causes":[{{"reason":"ExitCode","message":"{code}"}}]}}}}"#,
                serde_json::Value::String(message)
            )
            .into_bytes()
        }
    }
}

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
    if is_spdy(req.headers()) {
        return spdy_exec(req, query);
    }
    if !is_websocket(req.headers()) {
        return body::text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: only SPDY/3.1 and websocket upgrades are supported\n",
        );
    }
    let (protocol, resp) = websocket_handshake(&req, &["v5.channel.k8s.io", "v4.channel.k8s.io"]);
    let Some(protocol) = protocol else {
        return resp;
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
    resp
}

/// A `101 Switching Protocols` to `upgrade`, without the body headers every other answer has.
fn switching_protocols(upgrade: &'static str) -> Response<Body> {
    let mut resp = body::response(StatusCode::SWITCHING_PROTOCOLS, "", body::empty());
    let h = resp.headers_mut();
    h.remove(http::header::CONTENT_TYPE);
    h.remove(http::header::CACHE_CONTROL);
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static(upgrade));
    resp
}

/// A WebSocket handshake for the first of `supported` the client offers: the chosen
/// subprotocol and the `101`, or `None` and the refusal.
fn websocket_handshake(
    req: &Request<Incoming>,
    supported: &[&'static str],
) -> (Option<&'static str>, Response<Body>) {
    let offered = offered_protocols(req.headers());
    let Some(protocol) = supported
        .iter()
        .copied()
        .find(|p| offered.iter().any(|o| o == p))
    else {
        let refusal = body::text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: no supported websocket subprotocol offered\n",
        );
        return (None, refusal);
    };
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        let refusal = body::text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
        return (None, refusal);
    };
    let mut resp = switching_protocols("websocket");
    let h = resp.headers_mut();
    h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    (Some(protocol), resp)
}

/// How long the fake process takes to print its first line over WebSocket when the client
/// sends no stdin (see `run_exec`).
const FIRST_OUTPUT_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

/// How long a session with stdin waits for the client's first message before it prints its
/// first line anyway (a v4 client with nothing to send sends nothing).
const FIRST_INPUT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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
    // client-go's WebSocket executor (before kubernetes#131203, in kubectl 1.32 among others)
    // starts reading before it registers its streams, and drops what arrives for a stream it
    // does not know yet ("Unknown stream id 1, discarding message"). A real process's first
    // output comes later than the upgrade; answering in the same instant lost the line to that
    // race now and then. With stdin, the client's first message (data, or v5's close of
    // stdin) comes after its streams are registered, so the line waits for it; without, for a
    // fixed delay.
    let mut first = None;
    let mut ended = false;
    if stdin {
        match tokio::time::timeout(FIRST_INPUT_WAIT, ws.next()).await {
            Ok(Some(msg)) => first = Some(msg?),
            Ok(None) => ended = true,
            Err(_waited) => {}
        }
    }
    if stdout {
        if first.is_none() {
            tokio::time::sleep(FIRST_OUTPUT_DELAY).await;
        }
        let line = format!("{EXEC_STDOUT_PREFIX} {}\n", commands.join(" "));
        ws.send(frame(STDOUT, line.as_bytes())).await?;
    }
    if stdin && !ended {
        loop {
            let msg = match first.take() {
                Some(msg) => msg,
                None => match ws.next().await {
                    Some(msg) => msg?,
                    None => break,
                },
            };
            match msg {
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
    ws.send(frame(ERROR, &exit_status(commands))).await?;
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

fn is_spdy(headers: &HeaderMap) -> bool {
    is_upgrade(headers)
        && headers
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"))
}

const STREAM_PROTOCOL: &str = "x-stream-protocol-version";

/// The `101` of a SPDY upgrade with the negotiated stream protocol, or kube's refusals
/// (apimachinery `httpstream.Handshake`): 400 when the client names no stream protocol, 403
/// with `X-Accepted-Stream-Protocol-Versions` when none of its protocols is in `supported`.
/// The client's order decides; values are split on commas, trimmed of spaces and empty ones
/// dropped (`commaSeparatedHeaderValues`).
fn spdy_handshake(req: &Request<Incoming>, supported: &[&'static str]) -> Response<Body> {
    let offered: Vec<&str> = req
        .headers()
        .get_all(STREAM_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim_matches(' '))
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return body::text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required\n".to_owned(),
        );
    }
    let Some(protocol) = offered
        .iter()
        .find_map(|o| supported.iter().copied().find(|p| p == o))
    else {
        let mut refused = body::text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]\n",
                offered.join(" "),
                supported.join(" ")
            ),
        );
        for p in supported {
            refused.headers_mut().append(
                "x-accepted-stream-protocol-versions",
                HeaderValue::from_static(p),
            );
        }
        return refused;
    };
    let mut resp = switching_protocols("SPDY/3.1");
    resp.headers_mut()
        .insert(STREAM_PROTOCOL, HeaderValue::from_static(protocol));
    resp
}

fn spdy_exec(mut req: Request<Incoming>, query: &Query) -> Response<Body> {
    let resp = spdy_handshake(&req, &["v4.channel.k8s.io"]);
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return resp;
    }
    let session = SpdyExec {
        commands: query.all("command").map(str::to_owned).collect(),
        stdin: query.flag("stdin"),
        stdout: query.flag("stdout"),
        stderr: query.flag("stderr"),
        tty: query.flag("tty"),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            // The client going away mid-session is not an error for a fake process.
            let _ = session.run(TokioIo::new(upgraded)).await;
        }
    });
    resp
}

/// One exec over SPDY: the streams client-go opens (`error`, then `stdin`/`stdout`/`stderr`/
/// `resize` as requested), the fixed stdout line, stdin echoed to stdout, a `Success` Status on
/// the error stream.
struct SpdyExec {
    commands: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl SpdyExec {
    async fn run<S>(self, io: S) -> std::io::Result<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use crate::spdy::{self, Event};
        let (mut rd, mut wr) = tokio::io::split(io);
        let mut codec = spdy::HeaderCodec::new()?;
        let wanted: Vec<&str> = [
            Some("error"),
            self.stdin.then_some("stdin"),
            self.stdout.then_some("stdout"),
            self.stderr.then_some("stderr"),
            (self.tty && !self.stderr).then_some("resize"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut streams: std::collections::HashMap<String, u32> = Default::default();
        let mut last = 0;
        let mut stdin_done = !self.stdin;
        let mut started = false;
        loop {
            if !started && wanted.iter().all(|w| streams.contains_key(*w)) {
                started = true;
                if let Some(&out) = streams.get("stdout") {
                    let line = format!("{EXEC_STDOUT_PREFIX} {}\n", self.commands.join(" "));
                    spdy::data(&mut wr, out, line.as_bytes(), false).await?;
                }
            }
            if started && stdin_done {
                break;
            }
            let Some(event) = spdy::next_event(&mut rd, &mut wr, &mut codec).await? else {
                return Ok(());
            };
            match event {
                Event::Opened { stream, kind } => {
                    last = last.max(stream);
                    if let Some(kind) = kind {
                        streams.insert(kind, stream);
                    }
                }
                Event::Data {
                    stream,
                    fin,
                    payload,
                } => {
                    if Some(&stream) == streams.get("stdin") {
                        if let Some(&out) = streams.get("stdout")
                            && !payload.is_empty()
                        {
                            spdy::data(&mut wr, out, &payload, false).await?;
                        }
                        stdin_done |= fin;
                    }
                }
                Event::Other => {}
            }
        }
        if let Some(&error) = streams.get("error") {
            spdy::data(&mut wr, error, &exit_status(&self.commands), true).await?;
        }
        for kind in ["stdout", "stderr"] {
            if let Some(&id) = streams.get(kind) {
                spdy::data(&mut wr, id, &[], true).await?;
            }
        }
        spdy::goaway(&mut wr, last).await?;
        tokio::io::AsyncWriteExt::flush(&mut wr).await?;
        // Let the client read everything and close first.
        while let Ok(Some(_)) = spdy::read_frame(&mut rd).await {}
        Ok(())
    }
}

/// Pod port-forward over SPDY/3.1 (`portforward.k8s.io`): every `data` stream is echoed back
/// (a fake container that echoes on every port); `error` streams stay silent.
pub(crate) fn portforward(mut req: Request<Incoming>) -> Response<Body> {
    if !is_upgrade(req.headers()) {
        return body::status(&Status::bad_request("Upgrade request required"), false);
    }
    if is_websocket(req.headers()) {
        return tunnelled_portforward(req);
    }
    if !is_spdy(req.headers()) {
        return body::text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: only SPDY/3.1 and websocket upgrades are supported\n",
        );
    }
    let resp = spdy_handshake(&req, &["portforward.k8s.io"]);
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return resp;
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let _ = echo_forwarded(TokioIo::new(upgraded)).await;
        }
    });
    resp
}

/// The WebSocket subprotocol kubectl (≥ 1.31) uses for port-forward: SPDY/3.1 frames carried
/// in binary WebSocket messages.
const TUNNELLED_PORTFORWARD: &str = "SPDY/3.1+portforward.k8s.io";

/// Port-forward over a WebSocket tunnel: the same SPDY session as [`portforward`], its bytes
/// carried in binary messages (kube-apiserver's `portforward/tunneling.go`).
fn tunnelled_portforward(mut req: Request<Incoming>) -> Response<Body> {
    let (protocol, resp) = websocket_handshake(&req, &[TUNNELLED_PORTFORWARD]);
    if protocol.is_none() {
        return resp;
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let (spdy_side, tunnel_side) = tokio::io::duplex(64 * 1024);
        let _ = tokio::join!(tunnel(ws, tunnel_side), echo_forwarded(spdy_side));
    });
    resp
}

/// Carries a byte stream over binary WebSocket messages, both ways, until either side ends.
async fn tunnel<S>(ws: WebSocketStream<S>, bytes: tokio::io::DuplexStream) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut ws_out, mut ws_in) = ws.split();
    let (mut from_spdy, mut to_spdy) = tokio::io::split(bytes);
    let inbound = async {
        while let Some(Ok(message)) = ws_in.next().await {
            match message {
                Message::Binary(data) => to_spdy.write_all(&data).await?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        to_spdy.shutdown().await
    };
    let outbound = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = from_spdy.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
            if ws_out.send(message).await.is_err() {
                break;
            }
        }
        let _ = ws_out.close().await;
        Ok::<_, std::io::Error>(())
    };
    let (a, b) = tokio::join!(inbound, outbound);
    a.and(b)
}

async fn echo_forwarded<S>(io: S) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use crate::spdy::{self, Event};
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut codec = spdy::HeaderCodec::new()?;
    let mut data_streams = std::collections::HashSet::new();
    while let Some(event) = spdy::next_event(&mut rd, &mut wr, &mut codec).await? {
        match event {
            Event::Opened { stream, kind } => {
                if kind.as_deref() == Some("data") {
                    data_streams.insert(stream);
                }
            }
            Event::Data {
                stream,
                fin,
                payload,
            } => {
                if data_streams.contains(&stream) {
                    if !payload.is_empty() || fin {
                        spdy::data(&mut wr, stream, &payload, fin).await?;
                    }
                    if fin {
                        data_streams.remove(&stream);
                    }
                }
            }
            Event::Other => {}
        }
    }
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
