//! Property tests of the crate-internal parsers: the message decoder, `grpc-timeout`, metadata
//! on the wire and channel targets. The public-API properties live in `tests/properties.rs`.
//!
//! Each property is checked against a small reference written from the spec (gRPC's
//! `doc/PROTOCOL-HTTP2.md` and `doc/naming.md`), not against the code under test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use proptest::sample::Index;

use crate::client::{Target, TargetKind};
use crate::codec::Compression;
use crate::codec::compress::StreamEncoding;
use crate::codec::frame::{Decoder, PREFIX_LEN, frame_bytes};
use crate::metadata::Metadata;
use crate::proto::headers::{decode_timeout, encode_timeout};
use crate::status::Code;
use crate::transport::Address;

// ---------------------------------------------------------------------------------------------
// Allocation counting, to check that an oversize prefix is rejected before any allocation.

/// Passes every request to the system allocator and counts the bytes each thread asked for.
struct CountingAlloc;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is System's; the counter is a const-initialised thread-local `Cell`
// without a destructor, which never allocates or re-enters the allocator.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|n| n.set(n.get().saturating_add(layout.size())));
        // SAFETY: the caller upholds `alloc`'s contract, which is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|n| n.set(n.get().saturating_add(layout.size())));
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATED.try_with(|n| n.set(n.get().saturating_add(new_size)));
        // SAFETY: `ptr` came from this allocator, i.e. from System, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from System, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: CountingAlloc = CountingAlloc;

/// Bytes this thread allocated while `f` ran.
fn allocated_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (out, ALLOCATED.with(Cell::get) - before)
}

#[test]
fn counting_allocator_counts() {
    let (v, allocated) = allocated_during(|| vec![7u8; 10_000]);
    assert!(allocated >= 10_000, "{allocated}");
    drop(v);
}

// ---------------------------------------------------------------------------------------------
// The message decoder.

/// How a byte stream ends, according to the reference parser.
#[derive(Debug, Clone, PartialEq)]
enum End {
    /// Every byte belonged to a complete message.
    Clean,
    /// The stream stopped inside a prefix or a body.
    Truncated,
    /// A prefix was refused with this code.
    Refused(Code),
}

/// A gzip body inflated the plain way (whole, no limit): None if it is not exactly one valid
/// gzip member.
fn reference_gunzip(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut decoder = flate2::bufread::GzDecoder::new(body);
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).ok()?;
    decoder.into_inner().is_empty().then_some(out)
}

/// The spec's Length-Prefixed-Message grammar, applied to the whole stream at once. A
/// compressed message is inflated when the stream's encoding is gzip, and refused as INTERNAL
/// with no encoding or one we do not implement (compression.md); its inflated size is held to
/// the limit too.
fn reference_decode(wire: &[u8], max_len: usize, encoding: Option<&str>) -> (Vec<Vec<u8>>, End) {
    let mut messages = Vec::new();
    let mut rest = wire;
    loop {
        if rest.is_empty() {
            return (messages, End::Clean);
        }
        if rest.len() < PREFIX_LEN {
            return (messages, End::Truncated);
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let compressed = match rest[0] {
            0 => false,
            1 if encoding == Some("gzip") => true,
            _ => return (messages, End::Refused(Code::Internal)),
        };
        if len > max_len {
            return (messages, End::Refused(Code::ResourceExhausted));
        }
        if rest.len() - PREFIX_LEN < len {
            return (messages, End::Truncated);
        }
        let body = &rest[PREFIX_LEN..PREFIX_LEN + len];
        if compressed {
            match reference_gunzip(body) {
                Some(plain) if plain.len() <= max_len => messages.push(plain),
                Some(_) => return (messages, End::Refused(Code::ResourceExhausted)),
                None => return (messages, End::Refused(Code::Internal)),
            }
        } else {
            messages.push(body.to_vec());
        }
        rest = &rest[PREFIX_LEN + len..];
    }
}

/// Feeds `chunks` to a decoder one at a time, taking every message as soon as it is complete.
fn run_decoder(
    chunks: &[Bytes],
    max_len: usize,
    encoding: Option<&'static str>,
) -> (Vec<Bytes>, End) {
    let encoding = StreamEncoding::from_header(encoding.map(HeaderValue::from_static).as_ref());
    let mut decoder = Decoder::new(max_len, encoding);
    let mut messages = Vec::new();
    for chunk in chunks {
        decoder.push(chunk.clone());
        loop {
            match decoder.next_message() {
                Ok(Some(msg)) => messages.push(msg),
                Ok(None) => break,
                Err(status) => {
                    assert!(
                        !status.message().is_empty(),
                        "an error says what went wrong"
                    );
                    return (messages, End::Refused(status.code()));
                }
            }
        }
    }
    match decoder.finish() {
        Ok(()) => (messages, End::Clean),
        Err(status) => {
            assert_eq!(status.code(), Code::Internal, "{status}");
            assert!(status.message().contains("stream ended"), "{status}");
            (messages, End::Truncated)
        }
    }
}

/// Cuts `wire` at the given points into slices of the same buffer (empty slices included).
fn split_at(wire: &Bytes, cuts: &[Index]) -> Vec<Bytes> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
    points.push(0);
    points.push(wire.len());
    points.sort_unstable();
    points.windows(2).map(|w| wire.slice(w[0]..w[1])).collect()
}

fn frame(payload: &[u8]) -> Bytes {
    let framed = frame_bytes(Bytes::copy_from_slice(payload), usize::MAX).unwrap();
    let mut wire = BytesMut::from(&framed.head[..]);
    if let Some(tail) = framed.tail {
        wire.extend_from_slice(&tail);
    }
    wire.freeze()
}

/// Message bodies: mostly small, sometimes over the framer's copy threshold (16 KiB), so both
/// of its paths produce the input.
fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let payload = prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::collection::vec(any::<u8>(), 0..2048),
        1 => (16 * 1024 - 2..16 * 1024 + 40usize).prop_map(|n| vec![0xA5; n]),
    ];
    prop::collection::vec(payload, 0..8)
}

/// A gzip-compressed frame (Compressed-Flag set) of `payload`.
fn gzip_frame(payload: &[u8]) -> Vec<u8> {
    let mut z = BytesMut::new();
    crate::codec::compress::compress(Compression::Gzip, payload, &mut z).unwrap();
    let mut v = vec![1];
    v.extend_from_slice(&(z.len() as u32).to_be_bytes());
    v.extend_from_slice(&z);
    v
}

/// Byte streams that are partly well-formed: valid frames (plain and gzip), prefixes with odd
/// flags or lengths, and raw garbage, so every branch of the decoder is reached.
fn messy_wire() -> impl Strategy<Value = Vec<u8>> {
    let segment = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..24).prop_map(|p| frame(&p).to_vec()),
        1 => prop::collection::vec(0u8..4, 0..60).prop_map(|p| gzip_frame(&p)),
        1 => (prop_oneof![Just(0u8), Just(1), Just(2), any::<u8>()], any::<u32>()).prop_map(
            |(flag, len)| {
                let mut v = vec![flag];
                v.extend_from_slice(&len.to_be_bytes());
                v
            }
        ),
        1 => (0u8..2, 0u32..40).prop_map(|(flag, len)| {
            let mut v = vec![flag];
            v.extend_from_slice(&len.to_be_bytes());
            v
        }),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ];
    prop::collection::vec(segment, 0..8).prop_map(|s| s.concat())
}

proptest! {
    /// Valid frames decode to the same messages however the bytes are split into chunks.
    #[test]
    fn decoder_any_split_gives_the_same_messages(
        payloads in payloads(),
        cuts in prop::collection::vec(any::<Index>(), 0..24),
    ) {
        let wire: Bytes = payloads.iter().flat_map(|p| frame(p).to_vec()).collect::<Vec<_>>().into();
        let chunks = split_at(&wire, &cuts);
        let (got, end) = run_decoder(&chunks, 1 << 20, None);
        prop_assert_eq!(end, End::Clean);
        prop_assert_eq!(got.len(), payloads.len());
        for (msg, want) in got.iter().zip(&payloads) {
            prop_assert_eq!(&msg[..], &want[..]);
        }

        // A message that lies inside one chunk is handed out as a slice of it, not a copy.
        let mut start = 0;
        for (msg, payload) in got.iter().zip(&payloads) {
            let body = start + PREFIX_LEN..start + PREFIX_LEN + payload.len();
            start = body.end;
            let mut offset = 0;
            let in_one_chunk = chunks.iter().any(|c| {
                let range = offset..offset + c.len();
                offset += c.len();
                range.start <= body.start && body.end <= range.end
            });
            if in_one_chunk && !payload.is_empty() {
                prop_assert_eq!(msg.as_ptr(), wire[body.start..].as_ptr());
            }
        }
    }

    /// Arbitrary bytes, split arbitrarily, never panic: the decoder yields exactly the
    /// messages the spec's grammar finds, then the same clean end, truncation or refusal.
    #[test]
    fn decoder_garbage_matches_the_reference(
        wire in prop_oneof![messy_wire(), prop::collection::vec(any::<u8>(), 0..64)],
        cuts in prop::collection::vec(any::<Index>(), 0..12),
        max_len in prop_oneof![0usize..48, Just(usize::MAX)],
        encoding in prop_oneof![Just(None), Just(Some("gzip")), Just(Some("snappy"))],
    ) {
        let wire = Bytes::from(wire);
        let (want, want_end) = reference_decode(&wire, max_len, encoding);
        let (got, end) = run_decoder(&split_at(&wire, &cuts), max_len, encoding);
        prop_assert_eq!(end, want_end);
        let got: Vec<Vec<u8>> = got.iter().map(|m| m.to_vec()).collect();
        prop_assert_eq!(got, want);
    }

    /// A length prefix over the limit is refused as soon as the 5 prefix bytes are in, with
    /// both sizes named and without allocating anything near the announced size.
    #[test]
    fn decoder_refuses_oversize_prefix_before_allocating(
        max_len in 0usize..(4 << 20),
        excess in 1u64..u64::from(u32::MAX),
        earlier in payloads(),
    ) {
        let len = (max_len as u64 + (64 << 10) + excess).min(u64::from(u32::MAX)) as u32;
        prop_assume!(len as usize > max_len);
        let mut decoder = Decoder::new(max_len, StreamEncoding::Identity);
        let mut wire = BytesMut::new();
        let earlier: Vec<_> = earlier.into_iter().filter(|p| p.len() <= max_len).collect();
        for p in &earlier {
            wire.extend_from_slice(&frame(p));
        }
        wire.put_u8(0);
        wire.put_u32(len);
        decoder.push(wire.freeze());
        for _ in &earlier {
            prop_assert!(decoder.next_message().unwrap().is_some());
        }
        let (result, allocated) = allocated_during(|| decoder.next_message());
        let err = result.unwrap_err();
        prop_assert_eq!(err.code(), Code::ResourceExhausted);
        prop_assert!(err.message().contains(&len.to_string()), "{}", err);
        prop_assert!(err.message().contains(&max_len.to_string()), "{}", err);
        prop_assert!(allocated < 4096, "{} bytes allocated to refuse a {} byte message", allocated, len);
    }
}

// ---------------------------------------------------------------------------------------------
// grpc-timeout.

/// The spec's units, finest first, in nanoseconds.
const UNITS: [(u128, u8); 6] = [
    (1, b'n'),
    (1_000, b'u'),
    (1_000_000, b'm'),
    (1_000_000_000, b'S'),
    (60_000_000_000, b'M'),
    (3_600_000_000_000, b'H'),
];

/// The largest value the spec allows: 8 digits.
const MAX_TIMEOUT_VALUE: u128 = 99_999_999;

/// `TimeoutValue TimeoutUnit` per the spec: 1 to 8 ASCII digits, then one of `HMSmun`.
fn reference_timeout(text: &[u8]) -> Option<u128> {
    let (&unit, digits) = text.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let per = UNITS.iter().find(|(_, u)| *u == unit)?.0;
    let value: u128 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(value * per)
}

fn durations() -> impl Strategy<Value = Duration> {
    prop_oneof![
        any::<u64>().prop_map(Duration::from_nanos),
        (0u64..1 << 40).prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        // Right around each unit's 8-digit limit, where the unit changes.
        (0usize..6, 0u128..2_000).prop_map(|(i, d)| {
            let nanos = (MAX_TIMEOUT_VALUE * UNITS[i].0 + d).saturating_sub(1_000);
            Duration::new(
                (nanos / 1_000_000_000) as u64,
                (nanos % 1_000_000_000) as u32,
            )
        }),
    ]
}

proptest! {
    /// Encoding uses at most 8 digits and the finest unit they fit, rounds up (a server never
    /// sees a shorter deadline than the client's), and decodes back within one unit.
    #[test]
    fn timeout_round_trips_within_one_unit(d in durations()) {
        let encoded = encode_timeout(d);
        let text = encoded.as_bytes();
        let (&unit, digits) = text.split_last().unwrap();
        prop_assert!((1..=8).contains(&digits.len()), "{:?}", encoded);
        let per = UNITS.iter().position(|(_, u)| *u == unit).expect("a spec unit");
        let value: u128 = std::str::from_utf8(digits).unwrap().parse().unwrap();
        let nanos = d.as_nanos();
        let back = decode_timeout(&encoded).expect("our encoding decodes");
        prop_assert_eq!(back.as_nanos(), value * UNITS[per].0);
        if nanos > MAX_TIMEOUT_VALUE * UNITS[5].0 {
            // Longer than the spec can say: the longest timeout it can.
            prop_assert_eq!(text, b"99999999H");
            return Ok(());
        }
        prop_assert_eq!(value, nanos.div_ceil(UNITS[per].0), "rounded up, by less than a unit");
        if per > 0 {
            prop_assert!(
                nanos.div_ceil(UNITS[per - 1].0) > MAX_TIMEOUT_VALUE,
                "{:?} fits the finer unit {}", d, UNITS[per - 1].1 as char
            );
        }
        // So the relative error is at most 1000 / 99,999,999, about 0.001 %.
        prop_assert!((back.as_nanos() - nanos) * 99_999 <= nanos);
    }

    /// Any header value decodes exactly as the spec's grammar says, and a decoded timeout
    /// survives encoding again unchanged.
    #[test]
    fn timeout_decoding_follows_the_grammar(
        text in prop_oneof![
            "[0-9]{1,10}[HMSmunhsx]",
            "[-+ ]?[0-9]{0,9}[HMSmun]?",
            prop::collection::vec(0x20u8..0x7f, 0..12).prop_map(|b| String::from_utf8(b).unwrap()),
        ]
    ) {
        let value = HeaderValue::from_str(&text).unwrap();
        let got = decode_timeout(&value);
        prop_assert_eq!(got.map(|d| d.as_nanos()), reference_timeout(text.as_bytes()), "{:?}", text);
        if let Some(d) = got {
            prop_assert_eq!(decode_timeout(&encode_timeout(d)), Some(d));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata on the wire.

/// The base64 alphabet gRPC uses for `-bin` values (RFC 4648 §4).
fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

fn received(pairs: &[(&str, &[u8])]) -> Metadata {
    let mut headers = HeaderMap::new();
    for (k, v) in pairs {
        headers.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v).unwrap(),
        );
    }
    Metadata::from_headers(&headers)
}

proptest! {
    /// Binary values go out as unpadded base64 and come back identical, and so do values a
    /// peer sent padded, or several joined with commas in one header.
    #[test]
    fn binary_metadata_round_trips(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..5),
        padded in prop::collection::vec(any::<bool>(), 5),
        space in any::<bool>(),
    ) {
        let mut md = Metadata::new();
        for v in &values {
            md.append_bin("x-data-bin", v).unwrap();
        }
        let mut headers = HeaderMap::new();
        md.write_to(&mut headers);
        for sent in headers.get_all("x-data-bin") {
            prop_assert!(sent.as_bytes().iter().all(|&b| is_base64_char(b)), "{:?}", sent);
        }
        let back = Metadata::from_headers(&headers);
        let want: Vec<Bytes> = values.iter().map(|v| Bytes::copy_from_slice(v)).collect();
        prop_assert_eq!(back.get_all_bin("x-data-bin"), want.clone());
        prop_assert_eq!(&back, &md);

        let encoded: Vec<String> = values
            .iter()
            .zip(&padded)
            .map(|(v, &pad)| {
                if pad {
                    base64::engine::general_purpose::STANDARD.encode(v)
                } else {
                    base64::engine::general_purpose::STANDARD_NO_PAD.encode(v)
                }
            })
            .collect();
        let joined = encoded.join(if space { ", " } else { "," });
        let md = received(&[("x-data-bin", joined.as_bytes())]);
        prop_assert_eq!(md.get_all_bin("x-data-bin"), want);
    }

    /// Whatever a peer puts in headers, reading metadata never panics; each comma-separated
    /// part of a `-bin` value that is base64 (padded or not) is read, anything else skipped
    /// rather than misread; `iter` sees the same binary values as `get_all_bin`.
    #[test]
    fn received_metadata_never_panics(
        key in "[a-z0-9_.-]{1,10}(-bin)?",
        value in prop_oneof![
            prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..40),
            "[A-Za-z0-9+/=, ]{0,40}".prop_map(String::into_bytes),
        ],
    ) {
        let md = received(&[(&key, &value)]);
        let _ = md.get(&key);
        let _ = md.get_all(&key);
        let _ = format!("{md:?}");
        let decoded = md.get_all_bin(&key);
        if !key.ends_with("-bin") {
            prop_assert!(decoded.is_empty());
            return Ok(());
        }
        let strict = |part: &[u8]| {
            base64::engine::general_purpose::STANDARD
                .decode(part)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(part))
                .ok()
        };
        let mut out = decoded.iter().peekable();
        for part in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if let Some(want) = strict(part) {
                prop_assert_eq!(out.next().map(|b| b.to_vec()), Some(want), "{:?}", part);
            } else {
                // Partial padding ("AQ=") may be read or skipped; nothing else may be read.
                let lenient = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(part.trim_ascii_end().strip_suffix(b"=").unwrap_or(part))
                    .ok();
                // (An empty value comes only from an empty part: "=" must not claim the
                // empty value of the part after it.)
                let lenient = lenient.filter(|v| !v.is_empty());
                if lenient.is_some() && out.peek().map(|b| b.to_vec()) == lenient {
                    out.next();
                }
            }
        }
        prop_assert!(out.next().is_none(), "a value no part encodes was read");
        let iterated: Vec<Bytes> = md
            .iter()
            .filter_map(|(_, v)| match v {
                crate::MetadataValue::Binary(b) => Some(b),
                crate::MetadataValue::Ascii(_) => None,
            })
            .collect();
        prop_assert_eq!(iterated, decoded);
    }

    /// ASCII values go out byte for byte and are valid ASCII-Values of the spec.
    #[test]
    fn ascii_metadata_round_trips(value in "[ -~]{0,60}") {
        let mut md = Metadata::new();
        md.append("x-text", &value).unwrap();
        let mut headers = HeaderMap::new();
        md.write_to(&mut headers);
        let sent = headers.get("x-text").unwrap().as_bytes();
        prop_assert_eq!(sent, value.as_bytes());
        prop_assert!(sent.iter().all(|b| (0x20..=0x7e).contains(b)));
        let back = Metadata::from_headers(&headers);
        prop_assert_eq!(back.get("x-text"), Some(value.as_str()));
    }
}

// ---------------------------------------------------------------------------------------------
// Targets.

/// Scheme names a bare `name:port` would be read as (the naming doc's ambiguity).
const SCHEMES: [&str; 7] = [
    "dns",
    "ipv4",
    "ipv6",
    "unix",
    "unix-abstract",
    "http",
    "https",
];

/// DNS names: labels that start with a letter (so never an IP literal), optional final dot.
fn host_names() -> impl Strategy<Value = String> {
    (
        prop::collection::vec("[a-zA-Z][a-zA-Z0-9_-]{0,12}", 1..4),
        any::<bool>(),
    )
        .prop_map(|(labels, dot)| labels.join(".") + if dot { "." } else { "" })
}

fn ports() -> impl Strategy<Value = u16> {
    prop_oneof![
        1u16..=u16::MAX,
        Just(1),
        Just(u16::MAX),
        Just(443),
        Just(80)
    ]
}

fn socket_addrs() -> impl Strategy<Value = SocketAddr> {
    (any::<IpAddr>(), 1u16..=u16::MAX).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

/// Bytes written as `%XX` unless unreserved (RFC 3986 §2.3) or `/`.
fn percent_encode_path(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

fn parse_ok(text: &str) -> Result<Target, TestCaseError> {
    Target::parse(text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))
}

#[cfg(unix)]
fn path_of(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

proptest! {
    /// Every spelling of a DNS target gives the same host, port and `:authority`.
    #[test]
    fn dns_targets_round_trip(host in host_names(), port in ports(), form in 0usize..7) {
        let bare_ok = !SCHEMES.contains(&host.to_ascii_lowercase().as_str());
        let (text, want_port) = match form {
            0 if bare_ok => (format!("{host}:{port}"), port),
            0 | 1 => (format!("dns:///{host}:{port}"), port),
            2 => (format!("DnS:{host}:{port}"), port),
            3 => (format!("http://{host}:{port}/"), port),
            4 => (format!("http://{host}"), 80),
            5 => (format!("dns:///{host}"), 443),
            _ if bare_ok => (format!("  {host}  "), 443),
            _ => (format!("dns:{host}"), 443),
        };
        let target = parse_ok(&text)?;
        prop_assert_eq!(target.kind, TargetKind::Dns { host: host.clone(), port: want_port, server: None });
        prop_assert_eq!(target.authority.as_str(), format!("{host}:{want_port}"));
    }

    /// IP literals, alone or as `ipv4:`/`ipv6:` lists, give exactly those addresses, the
    /// first one as `:authority`.
    #[test]
    fn ip_targets_round_trip(
        addrs in prop::collection::vec(socket_addrs(), 1..5),
        form in 0usize..3,
    ) {
        let first = addrs[0];
        let single = |text: String| -> Result<(), TestCaseError> {
            let target = parse_ok(&text)?;
            prop_assert_eq!(target.kind, TargetKind::Static(vec![Address::Tcp(first)]));
            prop_assert_eq!(target.authority.as_str(), first.to_string());
            Ok(())
        };
        match form {
            0 => single(first.to_string())?,
            1 => single(format!("dns:///{first}"))?,
            _ => single(format!("http://{first}"))?,
        }
        for (scheme, want_v4) in [("ipv4", true), ("ipv6", false)] {
            let list: Vec<SocketAddr> = addrs.iter().copied().filter(|a| a.is_ipv4() == want_v4).collect();
            if list.is_empty() {
                continue;
            }
            let text = format!(
                "{scheme}:{}",
                list.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
            );
            let target = parse_ok(&text)?;
            prop_assert_eq!(target.kind, TargetKind::Static(list.iter().copied().map(Address::Tcp).collect()));
            prop_assert_eq!(target.authority.as_str(), list[0].to_string());
        }
    }

    /// `unix:` paths and `unix-abstract:` names come back byte for byte after percent-encoding,
    /// and an address's text form parses back to the same address.
    #[test]
    fn unix_targets_round_trip(
        path in prop::collection::vec(1u8..=255, 1..60),
        name in prop::collection::vec(any::<u8>(), 1..=107),
        triple_slash in any::<bool>(),
    ) {
        let encoded = percent_encode_path(&path);
        let text = if triple_slash && path[0] == b'/' {
            format!("unix://{encoded}")
        } else {
            format!("unix:{encoded}")
        };
        if !text.starts_with("unix://") || text.starts_with("unix:///") {
            let target = parse_ok(&text)?;
            prop_assert_eq!(target.kind, TargetKind::Static(vec![Address::Unix(path_of(&path))]));
            prop_assert_eq!(target.authority.as_str(), "localhost");
        }

        if cfg!(any(target_os = "linux", target_os = "android")) {
            let address = Address::UnixAbstract(name);
            let target = parse_ok(&address.to_string())?;
            prop_assert_eq!(target.kind, TargetKind::Static(vec![address]));
        }
    }

    /// Any string either parses or is INVALID_ARGUMENT naming the target; never a panic.
    #[test]
    fn any_target_parses_or_is_invalid_argument(
        text in prop_oneof![
            any::<String>(),
            "(dns|ipv4|ipv6|unix|unix-abstract|http|https|DNS|xds)?:?(//)?/?[a-z0-9:/\\[\\].,%@_+ -]{0,24}",
            "\\[?[0-9a-f:.%]{0,20}\\]?(:[0-9+-]{0,7})?",
        ]
    ) {
        match Target::parse(&text) {
            Ok(target) => {
                match &target.kind {
                    TargetKind::Dns { host, port, .. } => {
                        prop_assert!(!host.is_empty() && *port != 0);
                    }
                    TargetKind::Static(addrs) => {
                        prop_assert!(!addrs.is_empty());
                        for a in addrs {
                            if let Address::Tcp(sa) = a {
                                prop_assert_ne!(sa.port(), 0);
                            }
                        }
                    }
                }
            }
            Err(status) => {
                prop_assert_eq!(status.code(), Code::InvalidArgument);
                let prefix = format!("invalid target {text:?}: ");
                prop_assert!(status.message().starts_with(&prefix), "{}", status);
                prop_assert!(status.message().len() > prefix.len(), "{}", status);
            }
        }
    }
}
