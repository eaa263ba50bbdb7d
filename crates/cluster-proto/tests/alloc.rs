//! `Frame::decode` and `frame::encode` into a reused buffer do not allocate.
//!
//! A counting global allocator counts the allocations of the current thread only while a
//! measurement runs, so tests running in parallel do not disturb each other.

use bytes::{Bytes, BytesMut};
use cluster_proto::event;
use cluster_proto::frame::{self, Frame};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

struct Counting;

thread_local! {
    // `const` thread locals without destructors never allocate, so the allocator may use them.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn record() {
    // `try_with`: a thread being torn down may still allocate.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded to `System` unchanged; counting touches only thread locals.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The number of allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    COUNT.with(Cell::get)
}

const MESSAGE: &[u8] =
    br#"CONFIG:SEND_CONFIG_CHANGED||17||{"someString":"value","nested":{"a||b":"x||y"}}"#;

#[test]
fn the_counter_sees_allocations() {
    // Guards the tests below against a counter that never counts.
    assert_eq!(allocations(|| drop(black_box(vec![1u8; 16]))), 1);
}

#[test]
fn decode_of_a_shared_message_does_not_allocate() {
    let shared = Bytes::from(MESSAGE.to_vec());
    let mut read_buffer = BytesMut::with_capacity(4096);
    read_buffer.extend_from_slice(MESSAGE);
    let messages = [
        ("shared", shared),
        ("split from a read buffer", read_buffer.split().freeze()),
        ("frozen BytesMut", BytesMut::from(MESSAGE).freeze()),
        ("static", Bytes::from_static(MESSAGE)),
    ];
    for (kind, message) in messages {
        // The test's own clones below must not count: a `Vec`-backed `Bytes` allocates its
        // shared header on its first clone (that is `bytes`, not decode).
        drop(message.clone());
        let n = allocations(|| {
            for _ in 0..100 {
                let frame = Frame::decode(black_box(message.clone())).unwrap();
                assert_eq!(black_box(&frame).ack_id(), 17);
                assert_eq!(frame.data().len(), MESSAGE.len() - 32);
            }
        });
        assert_eq!(
            n, 0,
            "decode of a {kind} message allocated {n} times in 100 runs"
        );
    }

    // A `Vec`-backed buffer never cloned before: `bytes` allocates its shared header at the
    // first clone (the name slice); that is the one allocation decode may cause (see frame.rs).
    let message = Bytes::from(MESSAGE.to_vec());
    let n = allocations(|| drop(Frame::decode(black_box(message)).unwrap()));
    assert!(n <= 1, "decode of an unshared Vec allocated {n} times");
}

#[test]
fn encode_into_a_reused_buffer_does_not_allocate() {
    let data = vec![b'x'; 1024];
    let mut buf = Vec::with_capacity(2048);
    let n = allocations(|| {
        for id in 0..100 {
            buf.clear();
            frame::encode(
                event::CONFIG_SEND_CONFIG_CHANGED,
                id,
                black_box(&data),
                &mut buf,
            );
            frame::encode_ack(event::MODULE_READY, id, b"ok", &mut buf);
        }
    });
    assert_eq!(n, 0, "encode allocated {n} times in 100 runs");
    assert!(buf.ends_with(b"__ack_MODULE:READY||99||ok"));
}
