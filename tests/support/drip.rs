//! A response body that sends one byte per second: a slow server for
//! timeouts. Self-contained (bytes, hyper, tokio only) so the benchmarks
//! include this same file (`host/benches/common/mod.rs`).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};

/// A response body that sends one byte per second, out of `len`.
pub struct Drip(tokio::sync::mpsc::Receiver<Bytes>);

impl Drip {
    /// Starts dripping `len` bytes; stops early when the client hangs up.
    pub fn start(len: usize) -> Drip {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..len {
                if tx.send(Bytes::from_static(b".")).await.is_err() {
                    return; // the client hung up
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Drip(rx)
    }
}

impl Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut().0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
