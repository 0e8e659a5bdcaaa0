//! The body of a streamed completion: the worker's payloads as server-sent events.
//!
//! The stream owns the generation's cancel flag through [`CancelOnDrop`]: when the client
//! disconnects, hyper drops the response body, the flag is set, and the worker stops at its next
//! step. Dropping the receiver also makes the worker's next send fail, so either path ends it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::response::sse::Event;
use futures_core::Stream;
use tokio::sync::mpsc;

/// Sets the flag when dropped: ties a generation's life to whatever owns this.
#[derive(Debug)]
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Server-sent events from a generation's bounded channel.
pub struct EventStream {
    first: Option<String>,
    rx: mpsc::Receiver<String>,
    _cancel: CancelOnDrop,
}

impl EventStream {
    /// `first` was already received (the handler waits for it to tell an early error from a
    /// started stream); the rest come from `rx`.
    pub fn new(first: String, rx: mpsc::Receiver<String>, cancel: CancelOnDrop) -> Self {
        EventStream {
            first: Some(first),
            rx,
            _cancel: cancel,
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Event::default().data(first))));
        }
        this.rx
            .poll_recv(cx)
            .map(|payload| payload.map(|p| Ok(Event::default().data(p))))
    }
}
