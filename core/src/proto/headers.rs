//! Header names and values of the gRPC-over-HTTP/2 protocol (`doc/PROTOCOL-HTTP2.md`).

use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::codec::compress::{ACCEPT_ENCODING, Compression};
use crate::metadata::Metadata;
use crate::status::{Code, Status, percent_decode, percent_encode};

// The gRPC header names as `HeaderName`s: inserting a map entry under a `&str` key that is not
// a standard HTTP header copies the name into a new allocation on every call; a static
// `HeaderName` costs nothing.
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub(crate) const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub(crate) const GRPC_STATUS_DETAILS: HeaderName =
    HeaderName::from_static("grpc-status-details-bin");
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
pub(crate) const GRPC_PREVIOUS_RPC_ATTEMPTS: HeaderName =
    HeaderName::from_static("grpc-previous-rpc-attempts");
pub(crate) const GRPC_RETRY_PUSHBACK_MS: HeaderName =
    HeaderName::from_static("grpc-retry-pushback-ms");
pub(crate) const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
pub(crate) const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
pub(crate) const CONTENT_TYPE_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");

/// The `user-agent` we send, per the spec's "grpc-<lang>/<version>" convention.
pub(crate) const USER_AGENT: &str = concat!("grpc-rust-plexus/", env!("CARGO_PKG_VERSION"));

/// Whether a content-type names gRPC: `application/grpc` or `application/grpc+<format>` or
/// `application/grpc;<params>`.
pub(crate) fn is_grpc_content_type(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value else { return false };
    let v = value.as_bytes();
    let prefix = b"application/grpc";
    v.len() >= prefix.len()
        && v[..prefix.len()].eq_ignore_ascii_case(prefix)
        && matches!(v.get(prefix.len()), None | Some(b'+') | Some(b';'))
}

/// Encodes a timeout as `grpc-timeout`: at most 8 digits, in the finest unit that fits.
/// Values are rounded up so the server never sees a shorter deadline than the client's.
pub(crate) fn encode_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let value = nanos.div_ceil(per);
        if value <= MAX {
            return HeaderValue::from_str(&format!("{value}{unit}")).expect("digits and a letter");
        }
    }
    HeaderValue::from_static("99999999H")
}

/// Parses `grpc-timeout`; None for a malformed value.
pub(crate) fn decode_timeout(value: &HeaderValue) -> Option<Duration> {
    let v = value.as_bytes();
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit[0] {
        b'n' => Duration::from_nanos(n),
        b'u' => Duration::from_micros(n),
        b'm' => Duration::from_millis(n),
        b'S' => Duration::from_secs(n),
        b'M' => Duration::from_secs(n * 60),
        b'H' => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

/// Writes `grpc-encoding` (unless `compression` is identity) and our `grpc-accept-encoding`,
/// which every request and response advertises.
pub(crate) fn write_encoding(compression: Compression, headers: &mut HeaderMap) {
    if !compression.is_identity() {
        headers.insert(GRPC_ENCODING, HeaderValue::from_static(compression.name()));
    }
    headers.insert(GRPC_ACCEPT_ENCODING, ACCEPT_ENCODING);
}

/// The request head of a gRPC call (RFC 9113 §8.3.1 with gRPC's PROTOCOL-HTTP2.md): POST
/// `scheme://authority/path` with `content-type`, `te: trailers`, `user-agent`, a
/// `grpc-timeout` for the time left before `deadline`, the request encoding and the caller's
/// metadata. INTERNAL for a path that is not `/...` or not a valid URI path.
pub(crate) fn request(
    scheme: &http::uri::Scheme,
    authority: &http::uri::Authority,
    path: &str,
    user_agent: &HeaderValue,
    deadline: Option<std::time::Instant>,
    compression: Compression,
    metadata: &Metadata,
) -> Result<http::Request<()>, Status> {
    if !path.starts_with('/') {
        return Err(Status::internal(format!(
            "invalid method path {path:?}: must start with '/'"
        )));
    }
    let uri = http::Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|e| Status::internal(format!("invalid method path {path:?}: {e}")))?;
    let mut headers = HeaderMap::with_capacity(4 + metadata.len());
    headers.insert(http::header::CONTENT_TYPE, CONTENT_TYPE_GRPC);
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    headers.insert(http::header::USER_AGENT, user_agent.clone());
    if let Some(deadline) = deadline {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        headers.insert(GRPC_TIMEOUT, encode_timeout(left));
    }
    write_encoding(compression, &mut headers);
    metadata.write_to(&mut headers);
    let mut request = http::Request::new(());
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Reads the status out of trailers (or a trailers-only response); None without `grpc-status`.
pub(crate) fn status_from_trailers(trailers: &HeaderMap) -> Option<Status> {
    let raw = trailers.get(GRPC_STATUS)?;
    let code = Code::from_header(raw.as_bytes()).unwrap_or(Code::Unknown);
    let message = trailers
        .get(GRPC_MESSAGE)
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    let message = if Code::from_header(raw.as_bytes()).is_none() {
        format!(
            "invalid grpc-status {:?}: {message}",
            String::from_utf8_lossy(raw.as_bytes())
        )
    } else {
        message
    };
    let mut status = Status::new(code, message);
    let md = Metadata::from_headers(trailers);
    if let Some(details) = trailers.get(GRPC_STATUS_DETAILS) {
        let mut tmp = HeaderMap::new();
        tmp.insert("d-bin", details.clone());
        if let Some(bytes) = Metadata::from_headers(&tmp).get_bin("d-bin") {
            status = status.with_details(bytes);
        }
    }
    Some(status.with_metadata(md))
}

/// `grpc-status` values by code, static so the trailers of every call allocate none.
const STATUS_VALUES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

/// Writes a status (and its metadata) as trailers.
pub(crate) fn write_status(status: &Status, headers: &mut HeaderMap) {
    status.metadata().write_to(headers);
    let code = status.code().as_i32();
    let value = usize::try_from(code)
        .ok()
        .and_then(|i| STATUS_VALUES.get(i))
        .map_or_else(|| HeaderValue::from(code), |v| HeaderValue::from_static(v));
    headers.insert(GRPC_STATUS, value);
    if !status.message().is_empty() {
        let encoded = percent_encode(status.message());
        headers.insert(
            GRPC_MESSAGE,
            HeaderValue::from_str(&encoded).expect("percent-encoded is ASCII"),
        );
    }
    if !status.details().is_empty() {
        let mut md = Metadata::new();
        md.append_bin("d-bin", status.details()).expect("valid key");
        let mut tmp = HeaderMap::new();
        md.write_to(&mut tmp);
        if let Some(v) = tmp.remove("d-bin") {
            headers.insert(GRPC_STATUS_DETAILS, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_encoding_uses_finest_unit_with_8_digits() {
        assert_eq!(encode_timeout(Duration::from_millis(1500)), "1500000u");
        assert_eq!(encode_timeout(Duration::from_nanos(5)), "5n");
        assert_eq!(encode_timeout(Duration::from_secs(3600)), "3600000m");
        assert_eq!(encode_timeout(Duration::from_secs(200_000)), "200000S");
        assert_eq!(
            encode_timeout(Duration::from_secs(u64::MAX / 4)),
            "99999999H"
        );
        // Decoding what we encode never shortens the deadline.
        for nanos in [1u64, 999, 1_000_001, 123_456_789_123, 99_999_999_999_999] {
            let d = Duration::from_nanos(nanos);
            let back = decode_timeout(&encode_timeout(d)).unwrap();
            assert!(
                back >= d && back - d < d / 1000 + Duration::from_nanos(1),
                "{d:?} -> {back:?}"
            );
        }
        assert_eq!(
            decode_timeout(&HeaderValue::from_static("2M")),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn malformed_timeouts_are_rejected() {
        for v in ["", "m", "123", "123456789m", "12x", "-1m", "1.5S"] {
            assert_eq!(
                decode_timeout(&HeaderValue::from_str(v).unwrap()),
                None,
                "{v}"
            );
        }
    }

    #[test]
    fn content_type_forms() {
        let ok = |s: &'static str| is_grpc_content_type(Some(&HeaderValue::from_static(s)));
        assert!(ok("application/grpc"));
        assert!(ok("application/grpc+proto"));
        assert!(ok("application/grpc; charset=utf-8"));
        assert!(!ok("application/grpcx"));
        assert!(!ok("application/json"));
        assert!(!is_grpc_content_type(None));
    }

    #[test]
    fn status_round_trips_through_trailers() {
        let status = Status::new(Code::NotFound, "caf\u{e9} 100%").with_details(vec![0u8, 1, 2]);
        let mut h = HeaderMap::new();
        write_status(&status, &mut h);
        let back = status_from_trailers(&h).unwrap();
        assert_eq!(back.code(), Code::NotFound);
        assert_eq!(back.message(), "caf\u{e9} 100%");
        assert_eq!(back.details().as_ref(), &[0, 1, 2]);
    }

    #[test]
    fn every_code_is_written_as_its_number() {
        for n in 0..=16 {
            let code = Code::from_i32(n);
            assert_eq!(code.as_i32(), n, "Code covers 0..=16");
            let mut h = HeaderMap::new();
            write_status(&Status::new(code, ""), &mut h);
            assert_eq!(h[GRPC_STATUS], n.to_string().as_str());
            assert_eq!(status_from_trailers(&h).unwrap().code(), code);
        }
    }

    #[test]
    fn bad_status_values_still_yield_a_status() {
        let mut h = HeaderMap::new();
        h.insert(GRPC_STATUS, HeaderValue::from_static("abc"));
        h.insert(
            GRPC_MESSAGE,
            HeaderValue::from_bytes(b"bad %ZZ \xff").unwrap(),
        );
        let s = status_from_trailers(&h).unwrap();
        assert_eq!(s.code(), Code::Unknown);
        assert!(s.message().contains("%ZZ"), "{s}");
    }
}
