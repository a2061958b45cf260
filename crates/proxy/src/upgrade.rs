//! The upgrade path (exec, attach, port-forward; SPDY/3.1 and WebSocket), kept in one place.
//!
//! kube-apiserver §5.4 rules, and the CVEs they close:
//! - only `SPDY/3.1` and `websocket` are accepted as `Upgrade` tokens (kubernetes#72112);
//! - every upgrade dials a fresh, un-pooled HTTP/1.1 connection (ALPN `http/1.1`) and sends only
//!   the request head — the client's bytes after the head are not even read until a 101 is seen;
//! - the backend's complete response head is read and parsed before anything is decided;
//! - 101 → 101 to the client, then a full-duplex copy (bytes the backend sent right after its
//!   head are forwarded first); the 101 carries an [`UpgradeSession`] that ends with the copy,
//!   so audit and metrics see the request end when the session does, as kube-apiserver's do;
//! - non-101 below 400 → a 500 Status `invalid upgrade response: status code <n>`; the backend's
//!   response (and any `Location`) is never forwarded (CVE-2020-8559);
//! - 400 and above → that response and its body (for at most 10 s, as kube-apiserver allows)
//!   are forwarded with `Connection: close`, and both connections end there: nothing is ever
//!   bridged after a failed upgrade (CVE-2018-1002105).

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING, UPGRADE};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Empty;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::ext::{UpgradeSession, UpstreamError};
use crate::forward::{humanize, prepare_headers, target_path, timed_out, upstream_failure};
use crate::headers;
use crate::status::{Status, StatusFormat};
use crate::upstream::Upstream;

const ALLOWED_PROTOCOLS: [&str; 2] = ["SPDY/3.1", "websocket"];

fn tagged(mut res: Response<ProxyBody>, kind: &'static str) -> Response<ProxyBody> {
    res.extensions_mut().insert(UpstreamError { kind });
    res
}

fn with_close(mut res: Response<ProxyBody>) -> Response<ProxyBody> {
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    res
}

pub(crate) async fn forward_upgrade<B: Body>(
    upstream: &Upstream,
    req: Request<B>,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let format = StatusFormat::for_request(&parts.uri, &parts.headers);

    let mut protocols = parts.headers.get_all(UPGRADE).iter();
    let protocol = match (protocols.next(), protocols.next()) {
        (Some(p), None) => p.clone(),
        _ => {
            return Status::bad_request("an upgrade request must name exactly one protocol")
                .to_response_as(format);
        }
    };
    let Some(allowed) = protocol.to_str().ok().and_then(|p| {
        ALLOWED_PROTOCOLS
            .iter()
            .find(|a| a.eq_ignore_ascii_case(p.trim()))
    }) else {
        return Status::bad_request(format!(
            "upgrade protocol {:?} is not allowed (allowed: SPDY/3.1, websocket)",
            String::from_utf8_lossy(protocol.as_bytes())
        ))
        .to_response_as(format);
    };
    // Exec/attach/port-forward requests carry no body. Refusing bodies keeps the rule simple:
    // no client byte beyond the request head goes anywhere before the backend said 101.
    let declares_body = parts.headers.contains_key(TRANSFER_ENCODING)
        || parts
            .headers
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if declares_body || !(body.is_end_stream() || body.size_hint().upper() == Some(0)) {
        return Status::bad_request("an upgrade request must not have a body")
            .to_response_as(format);
    }
    drop(body);
    let Some(client_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return Status::bad_request("upgrades require an HTTP/1.1 connection")
            .to_response_as(format);
    };

    let pq = target_path(&parts);
    let uri = parts.uri.clone();
    if let Err(res) = prepare_headers(upstream, &uri, &mut parts.headers, &parts.extensions) {
        return *res;
    }
    headers::set_upgrade(&mut parts.headers, protocol);
    headers::set_host(&mut parts.headers, upstream.authority().as_str());

    let target: http::Uri = match upstream.path_for(&pq).parse() {
        Ok(u) => u,
        Err(e) => {
            return Status::internal_error(&format!("invalid upstream URI: {e}"))
                .to_response_as(format);
        }
    };
    let mut out = Request::new(Empty::<Bytes>::new());
    *out.method_mut() = parts.method;
    *out.uri_mut() = target;
    *out.headers_mut() = parts.headers;

    let mut sender = match dial(upstream, format).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    // hyper's HTTP/1 client reads and parses the complete response head before returning and
    // keeps any bytes read past it for the upgraded stream. The session is long-running, but
    // its answer is not: a backend that accepts the connection and never answers would hold
    // the request (and a client that has stopped reading) for ever, so the head has the
    // response-header timeout of short requests.
    let limit = upstream.response_header_timeout();
    let mut backend_res = match tokio::time::timeout(limit, sender.send_request(out)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return with_close(upstream_failure(upstream, &e, format)),
        Err(_) => return with_close(timed_out(upstream, limit, format)),
    };
    drop(sender);

    let status = backend_res.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let agreed = backend_res
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(allowed));
        if !agreed {
            return with_close(tagged(
                Status::failure(
                    500,
                    "invalid upgrade response: the backend switched to a different protocol",
                )
                .to_response_as(format),
                "upgrade",
            ));
        }
        let backend_io = match hyper::upgrade::on(&mut backend_res).await {
            Ok(io) => io,
            Err(e) => return with_close(upstream_failure(upstream, &e, format)),
        };
        let (mut head, _) = backend_res.into_parts();
        headers::strip_response(&mut head.headers, true);
        // The request ends with the bridge, not with the 101's empty body: the layers outside
        // hold their audit event and in-flight count in the session (see `UpgradeSession`).
        // `end` lives in the task, so the session ends however the task does: the copy ends
        // or fails, the client never upgrades, or the runtime drops the task unstarted.
        let (session, end) = UpgradeSession::start();
        head.extensions.insert(session);
        tokio::spawn(async move {
            let _end = end;
            let Ok(client_io) = client_upgrade.await else {
                return;
            };
            let mut client_io = TokioIo::new(client_io);
            let mut backend_io = TokioIo::new(backend_io);
            // Ends when either side closes; both halves are then dropped, closing both sockets.
            let _ = tokio::io::copy_bidirectional(&mut client_io, &mut backend_io).await;
            // Both sockets close before the session ends, so the event and the metrics
            // follow the connection's end.
            drop((client_io, backend_io));
        });
        return Response::from_parts(head, ProxyBody::empty());
    }
    if status.as_u16() < 400 {
        // Redirects and successes to an upgrade are refused and never shown (CVE-2020-8559).
        return with_close(tagged(
            Status::failure(
                500,
                format!("invalid upgrade response: status code {}", status.as_u16()),
            )
            .to_response_as(format),
            "upgrade",
        ));
    }
    // ≥ 400: forward the error with its body, then close (CVE-2018-1002105). The backend
    // connection closes once this body is done because its sender is gone. kube-apiserver
    // gives the echo 10 s; a backend still sending then is cut off, and both connections close.
    let (mut head, body) = backend_res.into_parts();
    headers::strip_response(&mut head.headers, false);
    with_close(Response::from_parts(
        head,
        ProxyBody::with_deadline(body, ERROR_ECHO_LIMIT),
    ))
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// How long the backend's error response to an upgrade may take to pass through
/// (apimachinery `UpgradeAwareHandler.tryUpgrade`'s read and write deadline).
const ERROR_ECHO_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A fresh TCP (+ TLS, ALPN `http/1.1`) connection used for exactly one upgrade request.
async fn dial(upstream: &Upstream, format: StatusFormat) -> Result<Sender, Response<ProxyBody>> {
    let authority = upstream.authority();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let default_port = if upstream.is_https() { 443 } else { 80 };
    let port = authority.port_u16().unwrap_or(default_port);
    let limit = upstream.connect_timeout();
    let unavailable = |cause: String| {
        with_close(tagged(
            Status::service_unavailable(format!(
                "{} is unavailable: {cause}",
                upstream.description()
            ))
            .to_response_as(format),
            "connect",
        ))
    };
    let connect = async {
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        // A bridged exec or port-forward can sit silent for hours: TCP keepalive is what finds
        // a path that died under it (as client-go's dialer sets it).
        socket2::SockRef::from(&tcp).set_tcp_keepalive(
            &socket2::TcpKeepalive::new().with_time(crate::upstream::KEEPALIVE_IDLE),
        )?;
        Ok::<_, std::io::Error>(tcp)
    };
    let tcp = match tokio::time::timeout(limit, connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(with_close(upstream_failure(upstream, &e, format))),
        Err(_) => {
            return Err(unavailable(format!(
                "connect timed out after {}",
                humanize(limit)
            )));
        }
    };
    let builder = hyper::client::conn::http1::Builder::new();
    if upstream.is_https() {
        let connector = tokio_rustls::TlsConnector::from(upstream.upgrade_tls().clone());
        let tls = match tokio::time::timeout(
            limit,
            connector.connect(upstream.server_name().clone(), tcp),
        )
        .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(with_close(upstream_failure(upstream, &e, format))),
            Err(_) => {
                return Err(unavailable(format!(
                    "TLS handshake timed out after {}",
                    humanize(limit)
                )));
            }
        };
        let (sender, conn) = builder
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| with_close(upstream_failure(upstream, &e, format)))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    } else {
        let (sender, conn) = builder
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| with_close(upstream_failure(upstream, &e, format)))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }
}
