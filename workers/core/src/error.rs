//! The error taxonomy every stage uses to decide what happens next.

/// How the pipeline treats an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Transient (timeout, throttling, connection reset): retry with backoff, bounded.
    Retryable,
    /// The input itself is bad: retrying cannot help; degrade or dead-letter the event.
    Poison,
    /// The worker cannot go on (bad config, missing weights, device failure): stop, let the
    /// orchestrator restart it; nothing is acknowledged that was not done.
    Fatal,
}

/// Errors that know their class.
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;
}
