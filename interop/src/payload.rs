//! Helpers for the `grpc.testing` payloads the interop cases and the benchmark send.

use bytes::Bytes;

use crate::grpc::testing::{Payload, PayloadType};

/// A compressible payload of `size` zero bytes (a negative size gives an empty body).
pub fn zeros(size: i32) -> Payload {
    Payload {
        r#type: PayloadType::Compressable as i32,
        body: Bytes::from(vec![0u8; usize::try_from(size).unwrap_or(0)]),
    }
}

/// The body length of an optional payload.
pub fn body_len(payload: &Option<Payload>) -> usize {
    payload.as_ref().map_or(0, |p| p.body.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::testing::*;
    use plexus::prost::Message;

    /// Bytes as protoc encodes them for the public field numbers, checked by hand: the
    /// generated messages must keep the wire format of the .proto files grpcio compiles.
    #[test]
    fn field_numbers_match_the_public_messages() {
        let req = SimpleRequest {
            response_size: 3,
            payload: Some(Payload {
                r#type: 0,
                body: Bytes::from_static(b"ab"),
            }),
            response_compressed: Some(BoolValue { value: true }),
            response_status: Some(EchoStatus {
                code: 2,
                message: "x".into(),
            }),
            expect_compressed: Some(BoolValue { value: false }),
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        let want: &[u8] = &[
            0x10, 3, // 2: response_size
            0x1a, 4, 0x12, 2, b'a', b'b', // 3: payload { 2: body }
            0x32, 2, 0x08, 1, // 6: response_compressed { 1: true }
            0x3a, 5, 0x08, 2, 0x12, 1, b'x', // 7: response_status { 1: 2, 2: "x" }
            0x42, 0, // 8: expect_compressed {} (false is the default)
        ];
        assert_eq!(bytes, want);

        let params = StreamingOutputCallRequest {
            response_parameters: vec![ResponseParameters {
                size: 1,
                interval_us: 2,
                compressed: Some(BoolValue { value: true }),
            }],
            response_status: Some(EchoStatus {
                code: 1,
                message: String::new(),
            }),
            ..Default::default()
        };
        let want: &[u8] = &[
            0x12, 8, 0x08, 1, 0x10, 2, 0x1a, 2, 0x08, 1, // 2: response_parameters
            0x3a, 2, 0x08, 1, // 7: response_status
        ];
        assert_eq!(params.encode_to_vec(), want);
        let input = StreamingInputCallRequest {
            payload: None,
            expect_compressed: Some(BoolValue { value: true }),
        };
        assert_eq!(input.encode_to_vec(), [0x12, 2, 0x08, 1]);
        assert_eq!(
            StreamingInputCallResponse {
                aggregated_payload_size: 5
            }
            .encode_to_vec(),
            [0x08, 5]
        );
        assert!(Empty {}.encode_to_vec().is_empty());
    }
}
