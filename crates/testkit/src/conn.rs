//! Per-connection plumbing: the socket wrapper that can turn a close into a TCP reset.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Lets a request handler kill its own connection with a reset.
#[derive(Debug, Default)]
pub(crate) struct ConnControl {
    reset: AtomicBool,
    pub(crate) killed: Notify,
}

impl ConnControl {
    pub(crate) fn reset(&self) {
        self.reset.store(true, Ordering::SeqCst);
        self.killed.notify_one();
    }
}

/// A TCP stream that sets SO_LINGER 0 before closing when its connection was reset, so the
/// peer sees RST instead of FIN.
pub(crate) struct ResettableStream {
    inner: TcpStream,
    control: Arc<ConnControl>,
}

impl ResettableStream {
    pub(crate) fn new(inner: TcpStream, control: Arc<ConnControl>) -> Self {
        Self { inner, control }
    }
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.control.reset.load(Ordering::SeqCst) {
            // Best effort: if it fails the peer sees a FIN instead.
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
