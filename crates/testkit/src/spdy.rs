//! The SPDY/3.1 server side that client-go's SPDY executor and port forwarder talk to (through
//! moby/spdystream): frames, name/value header blocks compressed with the SPDY/3 zlib dictionary,
//! streams the client opens (answered with SYN_REPLY), DATA with FIN, PING echoes. Nothing else
//! of SPDY (priorities, server push, flow control beyond ignoring WINDOW_UPDATE) is needed here.

use std::collections::HashMap;
use std::io;
use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
/// FIN on a DATA frame or a SYN_STREAM/SYN_REPLY.
const FLAG_FIN: u8 = 0x01;
/// Frames larger than this are a protocol error here (client-go sends at most 32 KiB).
const MAX_FRAME: usize = 1 << 20;

/// The SPDY/3 header-compression dictionary (draft 3, §2.6.10.1): length-prefixed header names
/// and values, then a run of common value text.
fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
            "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
            "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,",
            "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// One frame as read from the wire.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A control frame: its type and payload (control flags matter to nothing served here).
    Control { kind: u16, payload: Vec<u8> },
    /// A DATA frame.
    Data {
        stream: u32,
        flags: u8,
        payload: Vec<u8>,
    },
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// Reads the next frame; `None` at a clean end of the connection.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let flags = head[4];
    let len = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
    if len > MAX_FRAME {
        return Err(invalid("SPDY frame too large"));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if head[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(invalid("unsupported SPDY version"));
        }
        Ok(Some(Frame::Control {
            kind: u16::from_be_bytes([head[2], head[3]]),
            payload,
        }))
    } else {
        Ok(Some(Frame::Data {
            stream: be32(&head) & 0x7fff_ffff,
            flags,
            payload,
        }))
    }
}

/// The connection's two zlib contexts: header blocks share them across frames.
pub(crate) struct HeaderCodec {
    inflate: Decompress,
    deflate: Compress,
}

impl HeaderCodec {
    pub(crate) fn new() -> io::Result<Self> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .map_err(|_| invalid("zlib dictionary"))?;
        Ok(HeaderCodec {
            inflate: Decompress::new(true),
            deflate,
        })
    }

    /// Decodes a compressed name/value block (names are lowercase; multiple values of one name
    /// are NUL-separated, the first is kept).
    pub(crate) fn decode(&mut self, block: &[u8]) -> io::Result<HashMap<String, String>> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(256));
            }
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = usize::try_from(self.inflate.total_in() - in_before).unwrap_or(0);
            input = &input[used.min(input.len())..];
            let progressed = used > 0 || self.inflate.total_out() > out_before;
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|_| invalid("SPDY header dictionary mismatch"))?;
                    continue;
                }
                Err(_) => return Err(invalid("SPDY header block does not inflate")),
            }
            // A sync-flushed block is complete once all input is used and room was left over.
            if input.is_empty() && out.capacity() > out.len() {
                break;
            }
            if !progressed {
                return Err(invalid("SPDY header block does not inflate"));
            }
        }
        parse_pairs(&out)
    }

    /// Encodes name/value pairs into a compressed block.
    pub(crate) fn encode(&mut self, pairs: &[(&str, &str)]) -> io::Result<Vec<u8>> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
        for (name, value) in pairs {
            for s in [name, value] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw.as_slice();
        loop {
            let before_in = self.deflate.total_in();
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|_| invalid("zlib compression failed"))?;
            let used = usize::try_from(self.deflate.total_in() - before_in).unwrap_or(0);
            input = &input[used.min(input.len())..];
            // A sync flush is complete when output space was left over.
            if input.is_empty() && out.capacity() > out.len() {
                break;
            }
        }
        Ok(out)
    }
}

fn parse_pairs(mut b: &[u8]) -> io::Result<HashMap<String, String>> {
    let take = |b: &mut &[u8]| -> io::Result<String> {
        if b.len() < 4 {
            return Err(invalid("short SPDY header block"));
        }
        let len = be32(b) as usize;
        let rest = &b[4..];
        if rest.len() < len {
            return Err(invalid("short SPDY header block"));
        }
        let s = String::from_utf8_lossy(&rest[..len]).into_owned();
        *b = &rest[len..];
        Ok(s)
    };
    if b.len() < 4 {
        return Err(invalid("short SPDY header block"));
    }
    let n = be32(b);
    b = &b[4..];
    let mut headers = HashMap::new();
    for _ in 0..n {
        let name = take(&mut b)?;
        let value = take(&mut b)?;
        let first = value.split('\0').next().unwrap_or_default().to_owned();
        headers.insert(name.to_ascii_lowercase(), first);
    }
    Ok(headers)
}

/// A SYN_STREAM from the client: its stream ID and headers.
pub(crate) struct SynStream {
    pub(crate) stream: u32,
    pub(crate) headers: HashMap<String, String>,
}

pub(crate) fn syn_stream(codec: &mut HeaderCodec, payload: &[u8]) -> io::Result<SynStream> {
    if payload.len() < 10 {
        return Err(invalid("short SYN_STREAM"));
    }
    // Stream ID, associated stream ID, priority and slot, then the header block.
    Ok(SynStream {
        stream: be32(payload) & 0x7fff_ffff,
        headers: codec.decode(&payload[10..])?,
    })
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    let len = payload.len() as u32;
    f.push(flags);
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

/// Writes a SYN_REPLY (no headers) for `stream`.
pub(crate) async fn reply<W: AsyncWrite + Unpin>(
    w: &mut W,
    codec: &mut HeaderCodec,
    stream: u32,
) -> io::Result<()> {
    let mut payload = stream.to_be_bytes().to_vec();
    payload.extend_from_slice(&codec.encode(&[])?);
    w.write_all(&control(SYN_REPLY, 0, &payload)).await
}

/// Writes a DATA frame (empty with FIN closes our side of the stream).
pub(crate) async fn data<W: AsyncWrite + Unpin>(
    w: &mut W,
    stream: u32,
    bytes: &[u8],
    fin: bool,
) -> io::Result<()> {
    for (i, chunk) in bytes.chunks(32 * 1024).enumerate() {
        let last = (i + 1) * 32 * 1024 >= bytes.len();
        write_data(w, stream, chunk, fin && last).await?;
    }
    if bytes.is_empty() {
        write_data(w, stream, &[], fin).await?;
    }
    Ok(())
}

async fn write_data<W: AsyncWrite + Unpin>(
    w: &mut W,
    stream: u32,
    chunk: &[u8],
    fin: bool,
) -> io::Result<()> {
    let mut f = Vec::with_capacity(8 + chunk.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(if fin { FLAG_FIN } else { 0 });
    f.extend_from_slice(&(chunk.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(chunk);
    w.write_all(&f).await
}

/// What a frame means to a server once the protocol's own chores are done.
pub(crate) enum Event {
    /// The client opened a stream (already answered with SYN_REPLY); its `streamtype` header.
    Opened { stream: u32, kind: Option<String> },
    /// Data on a stream; `fin` half-closes it.
    Data {
        stream: u32,
        fin: bool,
        payload: Vec<u8>,
    },
    /// Anything else (SETTINGS, WINDOW_UPDATE, RST_STREAM, GOAWAY, PINGs already answered).
    Other,
}

/// Reads the next frame and does the chores every server owes: a SYN_REPLY to each stream the
/// client opens, an echo of each PING. `None` at the end of the connection.
pub(crate) async fn next_event<R, W>(
    rd: &mut R,
    wr: &mut W,
    codec: &mut HeaderCodec,
) -> io::Result<Option<Event>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Some(frame) = read_frame(rd).await? else {
        return Ok(None);
    };
    Ok(Some(match frame {
        Frame::Control {
            kind: SYN_STREAM,
            payload,
        } => {
            let mut syn = syn_stream(codec, &payload)?;
            reply(wr, codec, syn.stream).await?;
            Event::Opened {
                stream: syn.stream,
                kind: syn.headers.remove("streamtype"),
            }
        }
        Frame::Control {
            kind: PING,
            payload,
        } => {
            pong(wr, &payload).await?;
            Event::Other
        }
        Frame::Control { .. } => Event::Other,
        Frame::Data {
            stream,
            flags,
            payload,
        } => Event::Data {
            stream,
            fin: flags & FLAG_FIN != 0,
            payload,
        },
    }))
}

/// Echoes a PING.
pub(crate) async fn pong<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    w.write_all(&control(PING, 0, payload)).await
}

/// Says the connection is done (last stream `last`, status OK).
pub(crate) async fn goaway<W: AsyncWrite + Unpin>(w: &mut W, last: u32) -> io::Result<()> {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend_from_slice(&0u32.to_be_bytes());
    w.write_all(&control(GOAWAY, 0, &payload)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_has_the_spdy3_size_and_ends() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(d.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_through_two_codecs_sharing_state() {
        let mut client = HeaderCodec::new().unwrap();
        let mut server = HeaderCodec::new().unwrap();
        for i in 0..3 {
            let port = i.to_string();
            let block = client
                .encode(&[("streamtype", "data"), ("port", &port)])
                .unwrap();
            let headers = server.decode(&block).unwrap();
            assert_eq!(headers["streamtype"], "data");
            assert_eq!(headers["port"], port);
        }
    }
}
