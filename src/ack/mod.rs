//! Acknowledgement handles: how the router tells a source what became of a delivery.
//!
//! Every delivery carries one [`AckHandle`] that is resolved exactly once, as
//! [`Outcome::Ack`] (every required sink confirmed, or the dead letter did), [`Outcome::Retry`]
//! (deliver it again later) or [`Outcome::Reject`] (hand it to the broker's own dead-letter
//! mechanism). A handle dropped without being resolved resolves itself as a retry and logs
//! a warning: redelivery, never silent loss. Resolving is cheap; the broker I/O it causes
//! (commits, deletes, basic.ack) is done by the source's own task.

use std::fmt;

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: the source may forget the message.
    Ack,
    /// Not delivered this time: the source must deliver it again.
    Retry(String),
    /// Cannot be delivered: the source hands it to its broker's dead-letter mechanism.
    Reject(String),
}

impl Outcome {
    /// Merges outcomes of parts of one delivery: the worst wins (reject > retry > ack).
    pub fn worst(self, other: Outcome) -> Outcome {
        match (self, other) {
            (Outcome::Reject(r), _) | (_, Outcome::Reject(r)) => Outcome::Reject(r),
            (Outcome::Retry(r), _) | (_, Outcome::Retry(r)) => Outcome::Retry(r),
            (Outcome::Ack, Outcome::Ack) => Outcome::Ack,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ack => f.write_str("ack"),
            Outcome::Retry(reason) => write!(f, "retry ({reason})"),
            Outcome::Reject(reason) => write!(f, "reject ({reason})"),
        }
    }
}

/// The source side of a handle: receives the outcome, once.
pub trait Acknowledge: Send + 'static {
    fn resolve(self: Box<Self>, outcome: Outcome);
}

impl<F: FnOnce(Outcome) + Send + 'static> Acknowledge for F {
    fn resolve(self: Box<Self>, outcome: Outcome) {
        (*self)(outcome)
    }
}

/// Must be resolved once; dropping it unresolved means [`Outcome::Retry`].
#[must_use = "an ack handle dropped unresolved causes a redelivery"]
pub struct AckHandle {
    inner: Option<Box<dyn Acknowledge>>,
}

impl AckHandle {
    /// A handle that passes its outcome to `acknowledge`.
    pub fn new(acknowledge: impl Acknowledge) -> Self {
        AckHandle {
            inner: Some(Box::new(acknowledge)),
        }
    }

    /// A handle whose outcome does not matter (sources with nothing to acknowledge).
    pub fn noop() -> Self {
        AckHandle::new(|_: Outcome| {})
    }

    pub fn resolve(mut self, outcome: Outcome) {
        if let Some(inner) = self.inner.take() {
            inner.resolve(outcome);
        }
    }

    /// Drops the handle without any outcome. Only for a source that is gone: its broker
    /// redelivers what it never settled.
    pub fn abandon(mut self) {
        self.inner = None;
    }

    pub fn ack(self) {
        self.resolve(Outcome::Ack)
    }

    pub fn retry(self, reason: impl Into<String>) {
        self.resolve(Outcome::Retry(reason.into()))
    }

    pub fn reject(self, reason: impl Into<String>) {
        self.resolve(Outcome::Reject(reason.into()))
    }
}

impl fmt::Debug for AckHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.inner.is_some() {
            "AckHandle(unresolved)"
        } else {
            "AckHandle(resolved)"
        })
    }
}

impl Drop for AckHandle {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            tracing::warn!("ack handle dropped unresolved; the message will be redelivered");
            inner.resolve(Outcome::Retry("ack handle dropped unresolved".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recording() -> (AckHandle, Arc<Mutex<Vec<Outcome>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        (AckHandle::new(move |o| sink.lock().unwrap().push(o)), seen)
    }

    #[test]
    fn dropped_handle_resolves_as_retry() {
        let (handle, seen) = recording();
        drop(handle);
        assert!(matches!(seen.lock().unwrap()[..], [Outcome::Retry(_)]));
    }

    #[test]
    fn resolved_handle_reports_exactly_once() {
        let (handle, seen) = recording();
        handle.ack();
        assert_eq!(*seen.lock().unwrap(), vec![Outcome::Ack]);
    }

    #[test]
    fn worst_outcome_wins() {
        let reject = Outcome::Reject("r".into());
        assert_eq!(Outcome::Ack.worst(reject.clone()), reject);
        assert_eq!(
            Outcome::Retry("x".into()).worst(Outcome::Ack),
            Outcome::Retry("x".into())
        );
        assert_eq!(Outcome::Ack.worst(Outcome::Ack), Outcome::Ack);
    }
}
