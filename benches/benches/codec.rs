//! Codec micro-benchmarks (criterion), through plexus's public API only:
//! - `ProstCodec` encode and decode of `grpc.testing.SimpleRequest` with 0 B, 1 KiB and 1 MiB
//!   payloads, encoding behind a reserved 5-byte gRPC prefix as the call path does;
//! - `BytesCodec` (the untyped path) for the same sizes;
//! - metadata: building a `Metadata` with ASCII and `-bin` entries (base64) and reading them back.
//!
//! The length-prefix framer and the decoder (`codec::frame`) and the conversion of `Metadata`
//! into HTTP/2 headers (`proto::headers`) are crate-private, so they are measured only as part
//! of whole calls (the `unary` bench and `plexus-bench`).
//!
//! Run with `cargo bench -p plexus-benches --bench codec`.

use std::hint::black_box;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput};
use plexus::{BytesCodec, Codec, Metadata, MetadataValue, ProstCodec};
use plexus_interop::grpc::testing::SimpleRequest;
use plexus_interop::payload::zeros;

const SIZES: [(usize, &str); 3] = [(0, "0B"), (1024, "1KiB"), (1024 * 1024, "1MiB")];
/// The gRPC length prefix the call path reserves before encoding.
const PREFIX_LEN: usize = 5;

fn request(size: usize) -> SimpleRequest {
    SimpleRequest {
        response_size: size as i32,
        payload: Some(zeros(size as i32)),
        ..Default::default()
    }
}

fn prost_codec(c: &mut Criterion) {
    let codec = ProstCodec::<SimpleRequest, SimpleRequest>::new();
    let mut group = c.benchmark_group("prost");
    for (size, name) in SIZES {
        let msg = request(size);
        group.throughput(Throughput::Bytes(size.max(1) as u64));
        group.bench_with_input(BenchmarkId::new("encode", name), &msg, |b, msg| {
            b.iter(|| {
                let mut buf = BytesMut::with_capacity(256);
                buf.put_bytes(0, PREFIX_LEN);
                codec.encode(black_box(msg), &mut buf).expect("encodes");
                black_box(buf.freeze())
            })
        });
        let mut wire = BytesMut::new();
        codec.encode(&msg, &mut wire).expect("encodes");
        let wire = wire.freeze();
        group.bench_with_input(BenchmarkId::new("decode", name), &wire, |b, wire| {
            b.iter(|| black_box(codec.decode(black_box(wire.clone())).expect("decodes")))
        });
    }
    group.finish();
}

fn bytes_codec(c: &mut Criterion) {
    let codec = BytesCodec;
    let mut group = c.benchmark_group("bytes");
    for (size, name) in SIZES {
        let msg = Bytes::from(vec![7u8; size]);
        group.throughput(Throughput::Bytes(size.max(1) as u64));
        group.bench_with_input(BenchmarkId::new("encode", name), &msg, |b, msg| {
            b.iter(|| match codec.as_bytes(black_box(msg)) {
                // Large raw payloads go out without a copy; the bench shows that path.
                Some(raw) => black_box(raw),
                None => unreachable!("BytesCodec hands over raw bytes"),
            })
        });
        group.bench_with_input(BenchmarkId::new("decode", name), &msg, |b, msg| {
            b.iter(|| black_box(codec.decode(black_box(msg.clone())).expect("decodes")))
        });
    }
    group.finish();
}

fn metadata(c: &mut Criterion) {
    let mut group = c.benchmark_group("metadata");
    let trace = [0xabu8; 16];
    group.bench_function("build 4 ascii + 1 bin", |b| {
        b.iter(|| {
            let mut md = Metadata::new();
            md.append(
                "x-request-id",
                black_box("4bf92f3577b34da6a3ce929d0e0e4736"),
            )
            .expect("valid");
            md.append("x-user", black_box("alice")).expect("valid");
            md.append("x-tenant", black_box("acme")).expect("valid");
            md.append("x-route", black_box("eu-west/primary"))
                .expect("valid");
            md.append_bin("x-trace-bin", black_box(&trace))
                .expect("valid");
            black_box(md)
        })
    });
    let mut md = Metadata::new();
    md.append("x-request-id", "4bf92f3577b34da6a3ce929d0e0e4736")
        .expect("valid");
    md.append_bin("x-trace-bin", &trace).expect("valid");
    group.bench_function("iterate and decode bin", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for (key, value) in black_box(&md).iter() {
                n += key.len()
                    + match value {
                        MetadataValue::Ascii(v) => v.len(),
                        MetadataValue::Binary(v) => v.len(),
                    };
            }
            black_box(n)
        })
    });
    let big = vec![0x5au8; 4096];
    group.bench_function("append_bin 4 KiB", |b| {
        b.iter(|| {
            let mut md = Metadata::new();
            md.append_bin("x-blob-bin", black_box(&big)).expect("valid");
            black_box(md)
        })
    });
    group.finish();
}

// What criterion_group!/criterion_main! expand to, written out: the macros' generated
// function has no doc comment, which the workspace's missing_docs lint rejects.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    prost_codec(&mut c);
    bytes_codec(&mut c);
    metadata(&mut c);
    c.final_summary();
}
