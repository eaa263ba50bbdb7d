//! Benchmarks of the ETP frame codec: `Frame::decode` of a received message and
//! `frame::encode` into a reused buffer, at 64 B, 1 KiB and 1 MiB of data.
//!
//! Run: `cargo bench -p cluster-proto --bench frame`. Targets (Go figures in `docs/performance.md`): decode ≤ 40 ns
//! without allocating, encode into a reused buffer ≤ 55 ns at 1 KiB.

use cluster_proto::event;
use cluster_proto::frame::{self, Frame};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

const SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (1024 * 1024, "1MiB")];

/// JSON-looking data of `len` bytes (with `||` inside, as a config may have).
fn data(len: usize) -> Vec<u8> {
    let pattern = br#"{"someString":"value","nested":{"a||b":"x||y"},"n":12345},"#;
    pattern.iter().copied().cycle().take(len).collect()
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (len, label) in SIZES {
        // A shared `Bytes`, as the WebSocket layer hands over a received message.
        let message = frame::encode_to_bytes(event::CONFIG_SEND_CONFIG_CHANGED, 17, &data(len));
        // Cloning once turns the `Vec`-backed buffer into a shared one, as received messages are.
        drop(message.clone());
        group.throughput(Throughput::Bytes(message.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(label),
            &message,
            |b, message| {
                b.iter(|| Frame::decode(black_box(message.clone())));
            },
        );
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (len, label) in SIZES {
        let data = data(len);
        let mut buf = Vec::with_capacity(len + 64);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &data, |b, data| {
            b.iter(|| {
                buf.clear();
                frame::encode(
                    black_box(event::CONFIG_SEND_CONFIG_CHANGED),
                    black_box(17),
                    black_box(data),
                    &mut buf,
                );
                black_box(buf.len())
            });
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, encode
}
criterion_main!(benches);
