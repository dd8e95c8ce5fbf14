//! Property tests of the public API: metadata keys and values as the spec defines them, binary
//! and ASCII metadata through a real call and back, and channel targets (any string parses or
//! is INVALID_ARGUMENT). The crate-internal parsers have theirs in `src/proptests.rs`.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use plexus::{
    BytesCodec, CallOptions, Channel, Code, Listener, Metadata, MetadataValue, Request, Response,
    Server,
};
use proptest::prelude::*;

/// Header names that the gRPC spec or HTTP/2 reserve for the protocol itself.
const RESERVED: [&str; 8] = [
    "content-type",
    "te",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// The spec's Header-Name (`1*( %x30-39 / %x61-7A / "_" / "-" / ".")`), minus names reserved
/// for the protocol, with the `-bin` suffix deciding which kind of value it takes.
fn valid_key(key: &str, binary: bool) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'_' | b'-' | b'.'))
        && !key.starts_with("grpc-")
        && !RESERVED.contains(&key)
        && key.ends_with("-bin") == binary
}

/// The spec's ASCII-Value: space and printable ASCII.
fn valid_value(value: &str) -> bool {
    value.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

fn keys() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_.-]{1,12}(-bin)?",
        "grpc-[a-z-]{1,8}",
        prop::sample::select(RESERVED.to_vec()).prop_map(str::to_string),
        "[A-Za-z0-9_.:/ -]{0,10}",
        any::<String>(),
    ]
}

fn values() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        any::<String>(),
        "[ -~]{0,8}[\t\r\n\x00\x7f][ -~]{0,8}",
    ]
}

proptest! {
    /// A key and value are accepted exactly when the spec allows them; a refusal is an
    /// INTERNAL status that names the key, never a panic; accepted values read back in order.
    #[test]
    fn metadata_accepts_exactly_the_spec(key in keys(), v1 in values(), v2 in values()) {
        let mut md = Metadata::new();
        let first = md.append(&key, &v1);
        let second = md.append(&key, &v2);
        for (result, value) in [(&first, &v1), (&second, &v2)] {
            let want = valid_key(&key, false) && valid_value(value);
            prop_assert_eq!(result.is_ok(), want, "{:?} = {:?}: {:?}", key, value, result);
            if let Err(status) = result {
                prop_assert_eq!(status.code(), Code::Internal);
                prop_assert!(status.message().contains(&format!("{key:?}")), "{}", status);
            }
        }
        let stored: Vec<&str> = [(&first, &v1), (&second, &v2)]
            .into_iter()
            .filter(|(r, _)| r.is_ok())
            .map(|(_, v)| v.as_str())
            .collect();
        prop_assert_eq!(md.get_all(&key), stored.clone());
        prop_assert_eq!(md.get(&key), stored.first().copied());
        prop_assert_eq!(md.contains_key(&key), !stored.is_empty());
        prop_assert_eq!(md.len(), stored.len());
        prop_assert!(md.get_bin(&key).is_none());
        let _ = format!("{md:?}");
        prop_assert_eq!(md.remove(&key), !stored.is_empty());
        prop_assert!(md.is_empty());
    }

    /// Binary values: any bytes under a valid `-bin` key read back identical, through
    /// `get_bin`, `get_all_bin` and `iter`; any other key is refused without a panic.
    #[test]
    fn binary_metadata_round_trips(
        key in keys(),
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 1..4),
    ) {
        let mut md = Metadata::new();
        for v in &values {
            let result = md.append_bin(&key, v);
            prop_assert_eq!(result.is_ok(), valid_key(&key, true), "{:?}: {:?}", key, result);
            if let Err(status) = result {
                prop_assert_eq!(status.code(), Code::Internal);
            }
        }
        if !valid_key(&key, true) {
            prop_assert!(md.is_empty());
            return Ok(());
        }
        let want: Vec<Bytes> = values.iter().map(|v| Bytes::copy_from_slice(v)).collect();
        prop_assert_eq!(md.get_bin(&key), Some(want[0].clone()));
        prop_assert_eq!(md.get_all_bin(&key), want.clone());
        prop_assert!(md.get(&key).is_none());
        let iterated: Vec<Bytes> = md
            .iter()
            .map(|(k, v)| match v {
                MetadataValue::Binary(b) if k == key => Ok(b),
                other => Err(TestCaseError::fail(format!("unexpected {k:?} {other:?}"))),
            })
            .collect::<Result<_, _>>()?;
        prop_assert_eq!(iterated, want);
    }

    /// Any string as a channel target gives a channel or a configuration error that converts to
    /// INVALID_ARGUMENT naming the target.
    #[test]
    fn channel_targets_parse_or_are_invalid_argument(
        target in prop_oneof![
            any::<String>(),
            "(dns:|ipv4:|ipv6:|unix:|unix-abstract:|http:|https:)?(//)?/?[a-z0-9:/\\[\\].,%@_+ -]{0,24}",
        ]
    ) {
        match Channel::new(&target) {
            Ok(channel) => channel.shutdown(),
            Err(err) => {
                prop_assert!(err.is_config(), "{}", err);
                let status = plexus::Status::from(err);
                prop_assert_eq!(status.code(), Code::InvalidArgument, "{}", status);
                let prefix = format!("invalid target {target:?}: ");
                prop_assert!(status.message().starts_with(&prefix), "{}", status);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata through a real call.

const ECHO: &str = "/properties.Echo/Metadata";

/// One server for every case: it answers with the request's metadata as its response
/// metadata and again as its trailers.
fn echo_channel() -> &'static Channel {
    static CHANNEL: OnceLock<Channel> = OnceLock::new();
    CHANNEL.get_or_init(|| {
        let server = Server::builder()
            .unary(ECHO, BytesCodec, |req: Request<Bytes>| async move {
                let md = req.metadata().clone();
                Ok(Response::from_parts(md.clone(), req.into_message(), md))
            })
            .build()
            .unwrap();
        let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        smol::spawn(async move { server.serve(listener).await }).detach();
        Channel::new(&format!("http://{addr}")).unwrap()
    })
}

/// Metadata a client may send: `x-` keys (so none collides with what the transport adds),
/// ASCII and binary values.
fn sendable_metadata() -> impl Strategy<Value = Vec<(String, Result<String, Vec<u8>>)>> {
    let entry = prop_oneof![
        ("x-[a-z0-9_.-]{0,8}", "[ -~]{0,40}")
            .prop_filter("not -bin", |(k, _)| !k.ends_with("-bin"))
            .prop_map(|(k, v)| (k, Ok(v))),
        (
            "x-[a-z0-9_.-]{0,8}-bin",
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(k, v)| (k, Err(v))),
    ];
    prop::collection::vec(entry, 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// ASCII and binary metadata cross the wire (HPACK, base64) and come back identical, as
    /// response headers and as trailers.
    #[test]
    fn metadata_survives_a_call(entries in sendable_metadata()) {
        let mut md = Metadata::new();
        for (key, value) in &entries {
            match value {
                Ok(text) => md.append(key, text).unwrap(),
                Err(bytes) => md.append_bin(key, bytes).unwrap(),
            }
        }
        let options = CallOptions::new().timeout(Duration::from_secs(30)).metadata(md.clone());
        let response = smol::block_on(echo_channel().unary(ECHO, Bytes::from_static(b"m"), options))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for got in [response.metadata(), response.trailers()] {
            for key in md.keys() {
                if key.ends_with("-bin") {
                    prop_assert_eq!(got.get_all_bin(key), md.get_all_bin(key), "{}", key);
                } else {
                    prop_assert_eq!(got.get_all(key), md.get_all(key), "{}", key);
                }
            }
        }
    }
}
