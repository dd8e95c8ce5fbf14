//! Message compression: `identity`, `gzip` and `deflate` as gRPC negotiates them with
//! `grpc-encoding` and `grpc-accept-encoding` (`doc/compression.md`, `doc/PROTOCOL-HTTP2.md`).
//!
//! Compression works per message: a compressed message has its Compressed-Flag set and is
//! encoded with the stream's `grpc-encoding`. Inflating is bounded: it stops as soon as the
//! output passes the max receive size, so a small message that inflates to gigabytes (a zip
//! bomb) fails with RESOURCE_EXHAUSTED after at most that many bytes of work and memory.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;

use crate::status::Status;

/// A message compression algorithm, named on the wire by `grpc-encoding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// No compression (`identity`): the default.
    #[default]
    Identity,
    /// `gzip` (RFC 1952).
    Gzip,
    /// `deflate`: the zlib format (RFC 1950), as gRPC C-core and grpc-java write it.
    Deflate,
}

impl Compression {
    /// Every algorithm plexus implements, in the order it advertises them.
    pub const ALL: [Compression; 3] = [
        Compression::Identity,
        Compression::Deflate,
        Compression::Gzip,
    ];

    /// The wire name: `identity`, `gzip` or `deflate`.
    pub const fn name(self) -> &'static str {
        match self {
            Compression::Identity => "identity",
            Compression::Gzip => "gzip",
            Compression::Deflate => "deflate",
        }
    }

    /// The algorithm with wire name `name` (ASCII case-insensitive); None if unsupported.
    pub fn from_name(name: &str) -> Option<Compression> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// Whether this is [`Compression::Identity`] (no compression).
    pub const fn is_identity(self) -> bool {
        matches!(self, Compression::Identity)
    }

    const fn bit(self) -> u8 {
        match self {
            Compression::Identity => 1,
            Compression::Gzip => 2,
            Compression::Deflate => 4,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = Status;

    fn from_str(s: &str) -> Result<Compression, Status> {
        Compression::from_name(s).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unsupported compression {s:?} (supported: {SUPPORTED})"
            ))
        })
    }
}

/// Options for one sent message ([`Sender::send_with`](crate::Sender::send_with),
/// [`ResponseSink::send_with`](crate::ResponseSink::send_with)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOptions {
    compress: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions { compress: true }
    }
}

impl SendOptions {
    /// Default options: the message is compressed when the call compresses.
    pub fn new() -> SendOptions {
        SendOptions::default()
    }

    /// Whether this message may be compressed (default true). `false` sends it uncompressed
    /// even on a compressing call, as the spec's "specific disabling of compression" asks
    /// (against CRIME/BEAST-style attacks, or for data that does not compress).
    pub fn compress(mut self, compress: bool) -> SendOptions {
        self.compress = compress;
        self
    }

    /// Whether the message may be compressed.
    pub fn get_compress(&self) -> bool {
        self.compress
    }
}

/// Our `grpc-accept-encoding`, in [`Compression::ALL`] order.
pub(crate) const SUPPORTED: &str = "identity, deflate, gzip";

/// The `grpc-accept-encoding` value every request and response carries.
pub(crate) const ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static(SUPPORTED);

/// Level for gzip and deflate: zlib's default (6), which C-core (`Z_DEFAULT_COMPRESSION`) and
/// grpc-go (`gzip.DefaultCompression`) use too.
const LEVEL: u32 = 6;

/// What a stream's `grpc-encoding` header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamEncoding {
    /// Absent or `identity`: a compressed message on this stream is a protocol error.
    Identity,
    /// An algorithm we implement (never `Identity`).
    Known(Compression),
    /// An algorithm we do not implement, by name.
    Unknown(String),
}

impl StreamEncoding {
    /// Parses a `grpc-encoding` header.
    pub(crate) fn from_header(value: Option<&HeaderValue>) -> StreamEncoding {
        let Some(value) = value else {
            return StreamEncoding::Identity;
        };
        let name = String::from_utf8_lossy(value.as_bytes());
        let name = name.trim();
        match Compression::from_name(name) {
            Some(Compression::Identity) => StreamEncoding::Identity,
            Some(c) => StreamEncoding::Known(c),
            None => StreamEncoding::Unknown(name.to_string()),
        }
    }
}

/// The set of algorithms a peer accepts, from its `grpc-accept-encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AcceptSet(u8);

impl AcceptSet {
    /// Parses every `grpc-accept-encoding` header (comma-separated names; unknown ones are
    /// ignored). Identity is always accepted. A peer that sent none accepts only identity: we
    /// cannot know it decodes anything else.
    pub(crate) fn from_headers<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> AcceptSet {
        let mut bits = Compression::Identity.bit();
        for value in values {
            let Ok(text) = value.to_str() else { continue };
            for name in text.split(',') {
                if let Some(c) = Compression::from_name(name.trim()) {
                    bits |= c.bit();
                }
            }
        }
        AcceptSet(bits)
    }

    /// Whether `c` is in the set.
    pub(crate) fn contains(self, c: Compression) -> bool {
        self.0 & c.bit() != 0
    }
}

/// Appends `input`, compressed with `c`, to `out`.
pub(crate) fn compress(c: Compression, input: &[u8], out: &mut BytesMut) -> Result<(), Status> {
    let level = flate2::Compression::new(LEVEL);
    let writer = out.writer();
    let result = match c {
        Compression::Identity => {
            out.extend_from_slice(input);
            return Ok(());
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(writer, level);
            enc.write_all(input).and_then(|()| enc.finish().map(drop))
        }
        Compression::Deflate => {
            let mut enc = flate2::write::ZlibEncoder::new(writer, level);
            enc.write_all(input).and_then(|()| enc.finish().map(drop))
        }
    };
    // Writing into memory cannot fail; map it anyway rather than panic.
    result.map_err(|e| Status::internal(format!("{c} compression failed: {e}")))
}

/// Inflates one message compressed with `c`. The output may not exceed `max` bytes:
/// inflating stops as soon as it does (RESOURCE_EXHAUSTED). A corrupt, truncated or
/// over-long payload gives INTERNAL.
pub(crate) fn decompress(c: Compression, input: &[u8], max: usize) -> Result<Bytes, Status> {
    match c {
        Compression::Identity => Ok(Bytes::copy_from_slice(input)),
        Compression::Gzip => {
            // The gzip trailer's ISIZE (the length mod 2^32) is only a hint: it sizes the first
            // allocation, never beyond the limit.
            let hint = input
                .len()
                .checked_sub(4)
                .and_then(|at| <[u8; 4]>::try_from(&input[at..]).ok())
                .map_or(0, |b| u32::from_le_bytes(b) as usize);
            let mut decoder = flate2::bufread::GzDecoder::new(input);
            let out = inflate(c, &mut decoder, hint, max)?;
            check_consumed(c, decoder.into_inner().len())?;
            Ok(out)
        }
        Compression::Deflate => {
            let hint = input.len().saturating_mul(4);
            let mut decoder = flate2::bufread::ZlibDecoder::new(input);
            let out = inflate(c, &mut decoder, hint, max)?;
            check_consumed(c, decoder.into_inner().len())?;
            Ok(out)
        }
    }
}

/// Reads `decoder` to its end into one buffer of at most `max + 1` bytes.
fn inflate(
    c: Compression,
    decoder: &mut impl Read,
    hint: usize,
    max: usize,
) -> Result<Bytes, Status> {
    // One byte past the limit proves the message is too large without inflating further.
    let cap = max.saturating_add(1);
    let mut out = Vec::with_capacity(hint.max(64).min(cap).min(MAX_FIRST_ALLOCATION));
    let mut limited = decoder.take(cap as u64);
    limited.read_to_end(&mut out).map_err(|e| corrupt(c, &e))?;
    if out.len() > max {
        return Err(Status::resource_exhausted(format!(
            "received message larger than max after {c} decompression (more than {max} bytes)"
        )));
    }
    Ok(Bytes::from(out))
}

/// The first buffer for an inflated message is at most this large, whatever the peer's size
/// hint says; the buffer grows from there only as real output arrives.
const MAX_FIRST_ALLOCATION: usize = 1 << 20;

fn check_consumed(c: Compression, left: usize) -> Result<(), Status> {
    if left == 0 {
        Ok(())
    } else {
        Err(Status::internal(format!(
            "corrupt {c} message: {left} bytes after the end of the compressed data"
        )))
    }
}

fn corrupt(c: Compression, err: &io::Error) -> Status {
    Status::internal(format!("corrupt {c} message: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Code;

    fn packed(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        compress(c, data, &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn round_trips() {
        let text: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        for c in Compression::ALL {
            for data in [&b""[..], b"x", &text] {
                let z = packed(c, data);
                if !c.is_identity() && data.len() > 1000 {
                    assert!(
                        z.len() < data.len() / 2,
                        "{c}: {} -> {}",
                        data.len(),
                        z.len()
                    );
                }
                assert_eq!(decompress(c, &z, data.len()).unwrap(), data, "{c}");
            }
        }
    }

    #[test]
    fn formats_are_gzip_and_zlib() {
        assert_eq!(&packed(Compression::Gzip, b"hi")[..2], &[0x1f, 0x8b]);
        // zlib header: CM 8 (deflate), a window of 32 KiB, FCHECK making it a multiple of 31.
        let z = packed(Compression::Deflate, b"hi");
        assert_eq!(z[0], 0x78);
        assert_eq!(u16::from_be_bytes([z[0], z[1]]) % 31, 0);
    }

    #[test]
    fn names() {
        assert_eq!(Compression::from_name("GZIP"), Some(Compression::Gzip));
        assert_eq!(
            Compression::from_name("deflate"),
            Some(Compression::Deflate)
        );
        assert_eq!(
            Compression::from_name("identity"),
            Some(Compression::Identity)
        );
        assert_eq!(Compression::from_name("br"), None);
        assert_eq!("gzip".parse::<Compression>().unwrap(), Compression::Gzip);
        assert_eq!(
            "zstd".parse::<Compression>().unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(Compression::default(), Compression::Identity);
        assert_eq!(
            StreamEncoding::from_header(Some(&HeaderValue::from_static("snappy"))),
            StreamEncoding::Unknown("snappy".into())
        );
        assert_eq!(
            StreamEncoding::from_header(Some(&HeaderValue::from_static("identity"))),
            StreamEncoding::Identity
        );
        assert_eq!(StreamEncoding::from_header(None), StreamEncoding::Identity);
    }

    #[test]
    fn accept_sets() {
        let h = [
            HeaderValue::from_static("br,gzip"),
            HeaderValue::from_static(" deflate "),
        ];
        let set = AcceptSet::from_headers(h.iter());
        assert!(set.contains(Compression::Gzip));
        assert!(set.contains(Compression::Deflate));
        assert!(set.contains(Compression::Identity));
        let none = AcceptSet::from_headers([].iter());
        assert!(!none.contains(Compression::Gzip));
        assert!(none.contains(Compression::Identity));
        assert_eq!(
            AcceptSet::from_headers([ACCEPT_ENCODING].iter()),
            AcceptSet(7)
        );
    }

    #[test]
    fn output_over_the_limit_stops_early() {
        let zeros = vec![0u8; 8 << 20];
        for c in [Compression::Gzip, Compression::Deflate] {
            let z = packed(c, &zeros);
            assert!(z.len() < 64 << 10, "{c}: {}", z.len());
            let err = decompress(c, &z, 1 << 20).unwrap_err();
            assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
            assert!(err.message().contains("1048576"), "{err}");
            // Exactly at the limit is fine.
            assert_eq!(decompress(c, &z, 8 << 20).unwrap().len(), 8 << 20);
        }
    }

    #[test]
    fn lying_size_hint_does_not_allocate_it() {
        let mut z = packed(Compression::Gzip, b"small");
        let n = z.len();
        z[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        // ISIZE no longer matches: flate2 rejects the trailer, and nothing huge was reserved.
        let err = decompress(Compression::Gzip, &z, usize::MAX).unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{err}");
    }

    #[test]
    fn corrupt_input_is_internal() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 256) as u8).collect();
        for c in [Compression::Gzip, Compression::Deflate] {
            let z = packed(c, &data);
            let cases: Vec<(&str, Vec<u8>)> = vec![
                ("empty", vec![]),
                ("garbage", b"definitely not compressed".to_vec()),
                ("truncated", z[..z.len() / 2].to_vec()),
                ("short trailer", z[..z.len() - 1].to_vec()),
                ("trailing bytes", [&z[..], b"xx"].concat()),
                ("flipped bit", {
                    let mut b = z.clone();
                    let mid = b.len() / 2;
                    b[mid] ^= 0x10;
                    b
                }),
                ("bad checksum", {
                    // gzip ends in CRC-32 and ISIZE, zlib in Adler-32.
                    let mut b = z.clone();
                    let at = b.len() - if c == Compression::Gzip { 5 } else { 1 };
                    b[at] ^= 0xff;
                    b
                }),
            ];
            for (what, input) in cases {
                let err = decompress(c, &input, 1 << 20).unwrap_err();
                assert_eq!(err.code(), Code::Internal, "{c} {what}: {err}");
                assert!(err.message().contains(c.name()), "{c} {what}: {err}");
            }
        }
    }
}
