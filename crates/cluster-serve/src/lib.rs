//! Bounded HTTP/1.1 serving (work in progress).
