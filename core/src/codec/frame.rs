//! gRPC's length-prefixed message framing: a compressed flag, a 4-byte big-endian length, the
//! message (spec: `doc/PROTOCOL-HTTP2.md`, "Length-Prefixed-Message").

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Codec;
use crate::status::{Code, Status};

/// Size of the prefix in front of every message.
pub(crate) const PREFIX_LEN: usize = 5;

/// Raw payloads up to this size are copied behind their prefix into one buffer (one DATA
/// frame); larger ones go out as prefix + the caller's buffer, so big payloads are never copied.
const COPY_THRESHOLD: usize = 16 * 1024;

/// Default max size of a received message: 4 MiB, the default of every gRPC implementation.
pub const DEFAULT_MAX_RECV_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Default max size of a sent message: unlimited, as in grpc-go and C-core.
pub const DEFAULT_MAX_SEND_MESSAGE_SIZE: usize = usize::MAX;

/// A framed message ready for the wire: one or two buffers.
#[derive(Debug, Clone)]
pub(crate) struct Framed {
    pub(crate) head: Bytes,
    pub(crate) tail: Option<Bytes>,
}

impl Framed {
    /// Total bytes on the wire.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.tail.as_ref().map_or(0, Bytes::len)
    }
}

fn check_send_size(len: usize, max: usize) -> Result<u32, Status> {
    if len > max {
        return Err(Status::message_too_large("trying to send", len, max));
    }
    u32::try_from(len)
        .map_err(|_| Status::message_too_large("trying to send", len, u32::MAX as usize))
}

/// Frames a raw payload without copying it when it is large.
pub(crate) fn frame_bytes(payload: Bytes, max: usize) -> Result<Framed, Status> {
    let len = check_send_size(payload.len(), max)?;
    if payload.len() <= COPY_THRESHOLD {
        let mut buf = BytesMut::with_capacity(PREFIX_LEN + payload.len());
        buf.put_u8(0);
        buf.put_u32(len);
        buf.extend_from_slice(&payload);
        return Ok(Framed {
            head: buf.freeze(),
            tail: None,
        });
    }
    let mut prefix = BytesMut::with_capacity(PREFIX_LEN);
    prefix.put_u8(0);
    prefix.put_u32(len);
    Ok(Framed {
        head: prefix.freeze(),
        tail: Some(payload),
    })
}

/// Frames a typed message: prefix and message are written into one buffer.
pub(crate) fn frame_with<C: Codec + ?Sized>(
    codec: &C,
    item: &C::Encode,
    max: usize,
) -> Result<Framed, Status> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_bytes(0, PREFIX_LEN);
    codec.encode(item, &mut buf)?;
    let len = check_send_size(buf.len() - PREFIX_LEN, max)?;
    buf[1..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(Framed {
        head: buf.freeze(),
        tail: None,
    })
}

/// Frames a message of any codec, without a copy when the codec hands over raw bytes.
pub(crate) fn frame_message<C: Codec + ?Sized>(
    codec: &C,
    item: &C::Encode,
    max: usize,
) -> Result<Framed, Status> {
    match codec.as_bytes(item) {
        Some(bytes) => frame_bytes(bytes, max),
        None => frame_with(codec, item, max),
    }
}

/// Splits received DATA into messages. A message that lies within one DATA frame is handed out
/// as a slice of that frame; others are gathered into one buffer, allocated only after the
/// length prefix passed the size check.
#[derive(Debug)]
pub(crate) struct Decoder {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    /// Length of the message whose prefix was read, waiting for its body.
    body_len: Option<usize>,
    max_len: usize,
    /// The `grpc-encoding` of the stream, when it named one other than identity.
    encoding: Option<String>,
}

impl Decoder {
    /// A decoder that rejects messages over `max_len` bytes.
    pub(crate) fn new(max_len: usize, encoding: Option<String>) -> Decoder {
        Decoder {
            chunks: VecDeque::new(),
            buffered: 0,
            body_len: None,
            max_len,
            encoding,
        }
    }

    /// Adds received bytes.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.buffered += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// The next complete message, if one is buffered.
    pub(crate) fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        let len = match self.body_len {
            Some(len) => len,
            None => {
                if self.buffered < PREFIX_LEN {
                    return Ok(None);
                }
                let mut prefix = [0u8; PREFIX_LEN];
                self.copy_out(&mut prefix);
                let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
                self.check_prefix(prefix[0], len)?;
                self.body_len = Some(len);
                len
            }
        };
        if self.buffered < len {
            return Ok(None);
        }
        self.body_len = None;
        self.buffered -= len;
        let front = self.chunks.front_mut();
        if let Some(front) = front.filter(|f| f.len() >= len) {
            let msg = front.split_to(len);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            return Ok(Some(msg));
        }
        let mut buf = BytesMut::with_capacity(len);
        while buf.len() < len {
            let front = self
                .chunks
                .front_mut()
                .expect("buffered count covers the message");
            let take = (len - buf.len()).min(front.len());
            buf.extend_from_slice(&front[..take]);
            front.advance(take);
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        Ok(Some(buf.freeze()))
    }

    /// Called at end of stream: leftover bytes mean a truncated message.
    pub(crate) fn finish(&self) -> Result<(), Status> {
        match self.body_len {
            Some(len) => Err(Status::internal(format!(
                "stream ended in the middle of a message ({} of {len} bytes received)",
                self.buffered
            ))),
            None if self.buffered > 0 => Err(Status::internal(format!(
                "stream ended in the middle of a message prefix ({} of {PREFIX_LEN} bytes received)",
                self.buffered
            ))),
            None => Ok(()),
        }
    }

    fn check_prefix(&self, flag: u8, len: usize) -> Result<(), Status> {
        match flag {
            0 => {}
            1 => {
                return Err(match &self.encoding {
                    None => Status::internal(
                        "compressed flag set on a message, but no grpc-encoding was sent",
                    ),
                    Some(enc) => Status::new(
                        Code::Unimplemented,
                        format!("message compressed with unsupported encoding {enc:?}"),
                    ),
                });
            }
            other => {
                return Err(Status::internal(format!(
                    "invalid compressed flag {other} in message prefix"
                )));
            }
        }
        if len > self.max_len {
            return Err(Status::message_too_large("received", len, self.max_len));
        }
        Ok(())
    }

    /// Moves the first `out.len()` buffered bytes into `out`.
    fn copy_out(&mut self, out: &mut [u8]) {
        let mut filled = 0;
        while filled < out.len() {
            let front = self.chunks.front_mut().expect("caller checked buffered");
            let take = (out.len() - filled).min(front.len());
            out[filled..filled + take].copy_from_slice(&front[..take]);
            front.advance(take);
            filled += take;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        self.buffered -= out.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Bytes {
        let f = frame_bytes(Bytes::copy_from_slice(payload), usize::MAX).unwrap();
        let mut all = BytesMut::from(&f.head[..]);
        if let Some(t) = f.tail {
            all.extend_from_slice(&t);
        }
        all.freeze()
    }

    #[test]
    fn whole_message_in_one_chunk_is_a_slice() {
        let wire = framed(b"hello");
        let mut d = Decoder::new(100, None);
        d.push(wire.clone());
        let msg = d.next_message().unwrap().unwrap();
        assert_eq!(&msg[..], b"hello");
        // Same allocation: no copy.
        assert_eq!(msg.as_ptr(), wire[PREFIX_LEN..].as_ptr());
        assert!(d.next_message().unwrap().is_none());
        d.finish().unwrap();
    }

    #[test]
    fn messages_split_across_chunks_byte_by_byte() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&framed(b"one"));
        wire.extend_from_slice(&framed(b""));
        wire.extend_from_slice(&framed(&[7u8; 40_000]));
        let mut d = Decoder::new(1 << 20, None);
        let mut got = Vec::new();
        for b in wire.iter() {
            d.push(Bytes::copy_from_slice(&[*b]));
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(&got[0][..], b"one");
        assert!(got[1].is_empty());
        assert_eq!(got[2].len(), 40_000);
        d.finish().unwrap();
    }

    #[test]
    fn truncated_prefix_and_body_are_errors() {
        let mut d = Decoder::new(100, None);
        d.push(Bytes::from_static(&[0, 0, 0]));
        assert!(d.next_message().unwrap().is_none());
        assert_eq!(d.finish().unwrap_err().code(), Code::Internal);

        let mut d = Decoder::new(100, None);
        d.push(Bytes::from_static(&[0, 0, 0, 0, 9, 1, 2]));
        assert!(d.next_message().unwrap().is_none());
        let err = d.finish().unwrap_err();
        assert_eq!(err.code(), Code::Internal);
        assert!(err.message().contains("2 of 9"), "{err}");
    }

    #[test]
    fn huge_prefix_is_rejected_before_the_body() {
        let mut d = Decoder::new(DEFAULT_MAX_RECV_MESSAGE_SIZE, None);
        d.push(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]));
        let err = d.next_message().unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(
            err.message().contains("4294967295") && err.message().contains("4194304"),
            "{err}"
        );
    }

    #[test]
    fn compressed_flag_without_encoding_is_internal() {
        let mut d = Decoder::new(100, None);
        d.push(Bytes::from_static(&[1, 0, 0, 0, 1, 0]));
        assert_eq!(d.next_message().unwrap_err().code(), Code::Internal);
        let mut d = Decoder::new(100, None);
        d.push(Bytes::from_static(&[2, 0, 0, 0, 0]));
        assert_eq!(d.next_message().unwrap_err().code(), Code::Internal);
    }

    #[test]
    fn send_limit_names_both_sizes() {
        let err = frame_bytes(Bytes::from_static(&[0; 10]), 4).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("10 vs. 4"), "{err}");
    }

    #[test]
    fn large_payload_is_not_copied() {
        let payload = Bytes::from(vec![1u8; 100_000]);
        let f = frame_bytes(payload.clone(), usize::MAX).unwrap();
        assert_eq!(f.head.len(), PREFIX_LEN);
        assert_eq!(f.tail.unwrap().as_ptr(), payload.as_ptr());
    }
}
