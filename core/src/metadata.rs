//! Call metadata: ASCII and binary (`-bin`) key/value pairs carried in HTTP/2 headers.
//!
//! Keys and values are validated when they are added, so a bad key is an error before anything
//! is sent. Binary values travel base64-encoded; we emit unpadded base64 and accept both padded
//! and unpadded input, as the gRPC spec requires.

use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::status::Status;

/// Base64 as the gRPC spec wants it: emit unpadded, accept padded and unpadded.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Header names that belong to the HTTP/2 or gRPC framing and never appear as metadata.
const RESERVED: &[&str] = &[
    "content-type",
    "te",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// A set of metadata entries; a key may hold several values, in order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    headers: HeaderMap,
}

/// One metadata value, as returned by [`Metadata::iter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataValue<'a> {
    /// The value of an ASCII key.
    Ascii(&'a str),
    /// The decoded value of a `-bin` key.
    Binary(Bytes),
}

impl Metadata {
    /// An empty set.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Number of values (a key with two values counts twice).
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// Adds an ASCII value; the key must not end in `-bin`. Returns INTERNAL for a bad key or
    /// a value outside printable ASCII.
    pub fn append(&mut self, key: &str, value: &str) -> Result<(), Status> {
        let name = validate_key(key, false)?;
        if !value.bytes().all(|b| (0x20..=0x7E).contains(&b)) {
            return Err(Status::internal(format!(
                "invalid metadata value for key {key:?}: only printable ASCII is allowed"
            )));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| Status::internal(format!("invalid metadata value for key {key:?}")))?;
        self.headers.append(name, value);
        Ok(())
    }

    /// Replaces all values of an ASCII key with one value.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), Status> {
        self.remove(key);
        self.append(key, value)
    }

    /// Adds a binary value; the key must end in `-bin`.
    pub fn append_bin(&mut self, key: &str, value: &[u8]) -> Result<(), Status> {
        let name = validate_key(key, true)?;
        let encoded = BASE64.encode(value);
        let value = HeaderValue::from_str(&encoded).expect("base64 is a valid header value");
        self.headers.append(name, value);
        Ok(())
    }

    /// Replaces all values of a binary key with one value.
    pub fn insert_bin(&mut self, key: &str, value: &[u8]) -> Result<(), Status> {
        self.remove(key);
        self.append_bin(key, value)
    }

    /// The first value of an ASCII key.
    pub fn get(&self, key: &str) -> Option<&str> {
        if key.ends_with("-bin") {
            return None;
        }
        self.headers.get(key).and_then(|v| v.to_str().ok())
    }

    /// All values of an ASCII key, in order.
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        if key.ends_with("-bin") {
            return Vec::new();
        }
        self.headers
            .get_all(key)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The first value of a binary key, decoded; None when absent or not valid base64.
    pub fn get_bin(&self, key: &str) -> Option<Bytes> {
        self.get_all_bin(key).into_iter().next()
    }

    /// All values of a binary key, decoded. A header may hold several comma-separated values.
    pub fn get_all_bin(&self, key: &str) -> Vec<Bytes> {
        if !key.ends_with("-bin") {
            return Vec::new();
        }
        self.headers
            .get_all(key)
            .iter()
            .flat_map(decode_bin)
            .collect()
    }

    /// Removes every value of a key; returns whether there were any.
    pub fn remove(&mut self, key: &str) -> bool {
        match HeaderName::from_bytes(key.as_bytes()) {
            Ok(name) => {
                let had = self.headers.contains_key(&name);
                self.headers.remove(&name);
                had
            }
            Err(_) => false,
        }
    }

    /// Appends every entry of `other`, keeping existing values.
    pub fn extend(&mut self, other: Metadata) {
        let mut last = None;
        for (name, value) in other.headers {
            // `HeaderMap::into_iter` names a key only at its first value.
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last {
                self.headers.append(name.clone(), value);
            }
        }
    }

    /// Adds the values of every key of `defaults` that this set does not have.
    pub(crate) fn fill_from(&mut self, defaults: &Metadata) {
        for name in defaults.headers.keys() {
            if !self.headers.contains_key(name) {
                for value in defaults.headers.get_all(name) {
                    self.headers.append(name.clone(), value.clone());
                }
            }
        }
    }

    /// The distinct keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.headers.keys().map(|k| k.as_str())
    }

    /// Whether the key is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.headers.contains_key(key)
    }

    /// Every entry in order, binary values decoded as in [`get_all_bin`](Self::get_all_bin)
    /// (values that fail to decode are skipped).
    pub fn iter(&self) -> impl Iterator<Item = (&str, MetadataValue<'_>)> + '_ {
        self.headers.iter().flat_map(|(name, value)| {
            let key = name.as_str();
            let binary = key.ends_with("-bin");
            let ascii = (!binary)
                .then(|| value.to_str().ok())
                .flatten()
                .map(MetadataValue::Ascii);
            let decoded = binary.then(|| decode_bin(value)).into_iter().flatten();
            ascii
                .into_iter()
                .chain(decoded.map(MetadataValue::Binary))
                .map(move |v| (key, v))
        })
    }

    /// Keeps the application metadata of received headers, dropping the framing and `grpc-`
    /// headers.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Metadata {
        // Allocated on the first entry kept: most calls carry no metadata at all.
        let mut out = HeaderMap::new();
        for (name, value) in headers {
            let key = name.as_str();
            if key.starts_with("grpc-") || RESERVED.contains(&key) {
                continue;
            }
            out.append(name.clone(), value.clone());
        }
        Metadata { headers: out }
    }

    /// Copies the entries into outgoing headers.
    pub(crate) fn write_to(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// The values of one `-bin` header: comma-separated base64, padded or not; parts that are not
/// base64 are skipped.
fn decode_bin(value: &HeaderValue) -> impl Iterator<Item = Bytes> + '_ {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .filter_map(|part| BASE64.decode(part.trim_ascii()).ok().map(Bytes::from))
}

/// The trailer that carries a status's details.
const STATUS_DETAILS_KEY: &str = "grpc-status-details-bin";

fn validate_key(key: &str, binary: bool) -> Result<HeaderName, Status> {
    let bad = |why: &str| {
        Err(Status::internal(format!(
            "invalid metadata key {key:?}: {why}"
        )))
    };
    if key.is_empty() {
        return bad("empty");
    }
    if !key
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'_' | b'-' | b'.'))
    {
        return bad("only 0-9, a-z, '_', '-' and '.' are allowed");
    }
    // grpc-status-details-bin is the one grpc- key an application sets: a status's details
    // (google.rpc.Status) in trailing metadata, as grpcio's abort_with_status and grpc-go's
    // status package put them.
    if key.starts_with("grpc-") && key != STATUS_DETAILS_KEY {
        return bad("the grpc- prefix is reserved");
    }
    if RESERVED.contains(&key) {
        return bad("reserved by HTTP/2 or gRPC");
    }
    match (binary, key.ends_with("-bin")) {
        (true, false) => return bad("binary values need a key ending in -bin"),
        (false, true) => return bad("keys ending in -bin take binary values"),
        _ => {}
    }
    HeaderName::from_bytes(key.as_bytes()).or_else(|_| bad("not a valid header name"))
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_binary_round_trip() {
        let mut md = Metadata::new();
        md.append("x-a", "hello").unwrap();
        md.append("x-a", "again").unwrap();
        md.append_bin("x-b-bin", &[0, 1, 0xff]).unwrap();
        assert_eq!(md.get("x-a"), Some("hello"));
        assert_eq!(md.get_all("x-a"), vec!["hello", "again"]);
        assert_eq!(md.get_bin("x-b-bin").unwrap().as_ref(), &[0, 1, 0xff]);
        // Unpadded on the wire.
        let mut headers = HeaderMap::new();
        md.write_to(&mut headers);
        assert_eq!(headers.get("x-b-bin").unwrap(), "AAH/");
        let back = Metadata::from_headers(&headers);
        assert_eq!(back, md);
    }

    #[test]
    fn extend_keeps_every_value() {
        let mut a = Metadata::new();
        a.append("x-a", "1").unwrap();
        let mut b = Metadata::new();
        b.append("x-a", "2").unwrap();
        b.append("x-b", "3").unwrap();
        b.append("x-b", "4").unwrap();
        a.extend(b);
        assert_eq!(a.get_all("x-a"), vec!["1", "2"]);
        assert_eq!(a.get_all("x-b"), vec!["3", "4"]);
        assert_eq!(a.keys().collect::<Vec<_>>(), vec!["x-a", "x-b"]);
    }

    #[test]
    fn accepts_padded_and_unpadded_base64() {
        let mut headers = HeaderMap::new();
        headers.append("a-bin", HeaderValue::from_static("AQ=="));
        headers.append("b-bin", HeaderValue::from_static("AQ"));
        headers.append("c-bin", HeaderValue::from_static("AQ,Ag=="));
        let md = Metadata::from_headers(&headers);
        assert_eq!(md.get_bin("a-bin").unwrap().as_ref(), &[1]);
        assert_eq!(md.get_bin("b-bin").unwrap().as_ref(), &[1]);
        assert_eq!(
            md.get_all_bin("c-bin"),
            vec![Bytes::from_static(&[1]), Bytes::from_static(&[2])]
        );
        // iter() splits a comma-joined header the same way.
        let binary: Vec<_> = md.iter().filter(|(k, _)| *k == "c-bin").collect();
        assert_eq!(
            binary,
            vec![
                ("c-bin", MetadataValue::Binary(Bytes::from_static(&[1]))),
                ("c-bin", MetadataValue::Binary(Bytes::from_static(&[2])))
            ]
        );
    }

    #[test]
    fn rejects_bad_keys_and_values() {
        let mut md = Metadata::new();
        for key in [
            "",
            "Upper",
            "sp ace",
            "grpc-status",
            "content-type",
            "te",
            ":path",
            "x\n",
        ] {
            assert!(md.append(key, "v").is_err(), "{key:?} must be rejected");
        }
        assert!(md.append("x-bin", "v").is_err());
        assert!(md.append_bin("x", b"v").is_err());
        assert!(md.append("x", "line\nbreak").is_err());
        assert!(md.append("x", "caf\u{e9}").is_err());
        assert!(md.is_empty());
    }

    #[test]
    fn status_details_are_the_one_grpc_key_an_application_sets() {
        let mut md = Metadata::new();
        md.append_bin("grpc-status-details-bin", b"details")
            .unwrap();
        assert_eq!(
            md.get_bin("grpc-status-details-bin").unwrap().as_ref(),
            b"details"
        );
        assert!(md.append_bin("grpc-other-bin", b"x").is_err());
        assert!(md.append("grpc-status", "0").is_err());
    }

    #[test]
    fn drops_reserved_headers_from_the_wire() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        headers.insert("x-keep", HeaderValue::from_static("1"));
        let md = Metadata::from_headers(&headers);
        assert_eq!(md.len(), 1);
        assert_eq!(md.get("x-keep"), Some("1"));
    }
}
