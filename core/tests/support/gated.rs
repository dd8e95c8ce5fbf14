//! A byte stream wrapper for tests that shape a connection: it reads nothing until a gate
//! timer fires (as over a link whose round-trip time delays the server's first frames), and
//! counts itself out of an open-connection tally when dropped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_io::Timer;
use plexus::transport::BoxedIo;

/// `io`, holding back reads for `latency` (none when zero) and decrementing `open` on drop.
pub(crate) struct GatedIo {
    io: BoxedIo,
    gate: Option<Timer>,
    open: Option<Arc<AtomicUsize>>,
}

impl GatedIo {
    /// Boxes `io`; reads wait `latency` from now; `open` (if any) is decremented on drop.
    pub(crate) fn boxed(io: BoxedIo, latency: Duration, open: Option<Arc<AtomicUsize>>) -> BoxedIo {
        Box::new(GatedIo {
            io,
            gate: (!latency.is_zero()).then(|| Timer::after(latency)),
            open,
        })
    }
}

impl Drop for GatedIo {
    fn drop(&mut self) {
        if let Some(open) = &self.open {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl futures_io::AsyncRead for GatedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(gate) = &mut self.gate {
            ready!(Pin::new(gate).poll(cx));
            self.gate = None;
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl futures_io::AsyncWrite for GatedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}
