//! What reading costs in memory on an idle connection (a module's, or one of a service's
//! thousands): a read that finds nothing allocates no read buffer, and a small message is
//! kept in an allocation of its own size, handed over whole. Counted with a global allocator
//! that tallies the bytes each thread allocates.

mod common;
use common::raw::{raw_server, text_frame};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::task::{Context, Poll, Waker};
use tokio::io::AsyncWriteExt;

struct Tally;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to `System`; the tally is a thread-local counter without a destructor.
unsafe impl GlobalAlloc for Tally {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + layout.size()));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + new_size));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static TALLY: Tally = Tally;

/// Bytes this thread allocated while `f` ran.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (out, ALLOCATED.with(Cell::get) - before)
}

#[tokio::test]
async fn an_idle_read_allocates_no_buffer_and_a_small_message_its_own_size() {
    let (mut client, mut raw) = raw_server().await;

    // Nothing to read: one poll of `recv`, pending.
    let (pending, bytes) = allocated_by(|| {
        let mut recv = client.stream.recv();
        let polled = recv
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending();
        drop(recv);
        polled
    });
    assert!(pending);
    // The boxed future of `recv` (async_trait) is all: no 4 KiB read buffer.
    assert!(
        bytes < 1024,
        "a read that found nothing allocated {bytes} bytes"
    );

    // A 100-byte message: the read keeps it in 100-odd bytes, not a 4 KiB buffer.
    raw.write_all(&text_frame(&[b'm'; 100], false))
        .await
        .unwrap();
    raw.flush().await.unwrap();
    let ready = std::pin::pin!(tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.stream.recv(),
    ));
    let mut ready = ready;
    let message = loop {
        let (polled, bytes) =
            allocated_by(|| ready.as_mut().poll(&mut Context::from_waker(Waker::noop())));
        match polled {
            Poll::Ready(message) => {
                assert!(
                    bytes < 1024,
                    "reading a 100-byte message allocated {bytes} bytes"
                );
                break message;
            }
            // Not arrived yet: let the runtime's IO driver see the socket.
            Poll::Pending => tokio::task::yield_now().await,
        }
    };
    match message.expect("in time").expect("a message") {
        cluster_transport::Incoming::Text(text) => assert_eq!(&text[..], &[b'm'; 100][..]),
        other => panic!("{other:?}"),
    }
}
