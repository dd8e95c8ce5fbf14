//! gRPC's length-prefixed message framing: a compressed flag, a 4-byte big-endian length, the
//! message (spec: `doc/PROTOCOL-HTTP2.md`, "Length-Prefixed-Message").

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Codec;
use super::compress::{self, Compression, SUPPORTED, StreamEncoding};
use crate::status::Status;

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

/// Frames a message of any codec, without a copy when the codec hands over raw bytes and the
/// message goes out uncompressed.
pub(crate) fn frame_message<C: Codec + ?Sized>(
    codec: &C,
    item: &C::Encode,
    max: usize,
    compression: Compression,
) -> Result<Framed, Status> {
    if compression.is_identity() {
        return match codec.as_bytes(item) {
            Some(bytes) => frame_bytes(bytes, max),
            None => frame_with(codec, item, max),
        };
    }
    match codec.as_bytes(item) {
        Some(bytes) => frame_compressed(&bytes, max, compression),
        None => {
            let mut buf = BytesMut::with_capacity(256);
            codec.encode(item, &mut buf)?;
            frame_compressed(&buf, max, compression)
        }
    }
}

/// Frames `payload` compressed with `compression`, Compressed-Flag set. The size limit applies
/// to the message before compression, so an oversized one fails before any work on it.
fn frame_compressed(
    payload: &[u8],
    max: usize,
    compression: Compression,
) -> Result<Framed, Status> {
    check_send_size(payload.len(), max)?;
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + payload.len() / 2 + 64);
    buf.put_u8(1);
    buf.put_u32(0);
    compress::compress(compression, payload, &mut buf)?;
    let len = u32::try_from(buf.len() - PREFIX_LEN).map_err(|_| {
        Status::message_too_large("trying to send", buf.len() - PREFIX_LEN, u32::MAX as usize)
    })?;
    buf[1..PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(Framed {
        head: buf.freeze(),
        tail: None,
    })
}

/// Splits received DATA into messages. A message that lies within one DATA frame is handed out
/// as a slice of that frame; others are gathered into one buffer, allocated only after the
/// length prefix passed the size check.
#[derive(Debug)]
pub(crate) struct Decoder {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    /// Length and Compressed-Flag of the message whose prefix was read, waiting for its body.
    body_len: Option<(usize, bool)>,
    max_len: usize,
    /// The stream's `grpc-encoding`.
    encoding: StreamEncoding,
    /// Whether the last message handed out arrived compressed.
    last_compressed: bool,
    /// Where messages spanning DATA frames are gathered; its allocation is reused for the next
    /// such message once the caller dropped the last one (see [`Decoder::take_body`]).
    gather: BytesMut,
}

impl Decoder {
    /// A decoder that rejects messages over `max_len` bytes (before and after decompression)
    /// and inflates compressed ones with the stream's `encoding`.
    pub(crate) fn new(max_len: usize, encoding: StreamEncoding) -> Decoder {
        Decoder {
            chunks: VecDeque::new(),
            buffered: 0,
            body_len: None,
            max_len,
            encoding,
            last_compressed: false,
            gather: BytesMut::new(),
        }
    }

    /// Whether the last message [`Decoder::next_message`] returned arrived compressed.
    pub(crate) fn last_compressed(&self) -> bool {
        self.last_compressed
    }

    /// Adds received bytes.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.buffered += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// The next complete message, if one is buffered, inflated if it arrived compressed.
    pub(crate) fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        let (len, compressed) = match self.body_len {
            Some(body) => body,
            None => {
                if self.buffered < PREFIX_LEN {
                    return Ok(None);
                }
                let mut prefix = [0u8; PREFIX_LEN];
                self.copy_out(&mut prefix);
                let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
                let compressed = self.check_prefix(prefix[0], len)?;
                self.body_len = Some((len, compressed));
                (len, compressed)
            }
        };
        if self.buffered < len {
            return Ok(None);
        }
        self.body_len = None;
        let msg = self.take_body(len);
        self.last_compressed = compressed;
        if !compressed {
            return Ok(Some(msg));
        }
        match self.encoding {
            StreamEncoding::Known(c) => compress::decompress(c, &msg, self.max_len).map(Some),
            // check_prefix lets the flag through only with a known encoding.
            _ => Err(Status::internal(
                "compressed message on an uncompressed stream",
            )),
        }
    }

    /// Takes the next `len` buffered bytes: a slice of one chunk when they lie within it.
    fn take_body(&mut self, len: usize) -> Bytes {
        self.buffered -= len;
        let front = self.chunks.front_mut();
        if let Some(front) = front.filter(|f| f.len() >= len) {
            let msg = front.split_to(len);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            return msg;
        }
        // Reuse the previous gathered message's allocation when nothing refers to it any more
        // and it is not much larger than needed (`try_reclaim` never allocates): a stream of
        // large messages then reuses one buffer instead of having the allocator map and fault
        // in fresh pages for each (about 256 page faults per MiB with glibc's malloc). A
        // message the caller still holds keeps its own buffer.
        let reusable =
            self.gather.try_reclaim(len) && self.gather.capacity() <= len.saturating_mul(2);
        if !reusable {
            self.gather = BytesMut::with_capacity(len);
        }
        let buf = &mut self.gather;
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
        buf.split_to(len).freeze()
    }

    /// Called at end of stream: leftover bytes mean a truncated message.
    pub(crate) fn finish(&self) -> Result<(), Status> {
        match self.body_len {
            Some((len, _)) => Err(Status::internal(format!(
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

    /// Checks a message prefix; returns its Compressed-Flag.
    fn check_prefix(&self, flag: u8, len: usize) -> Result<bool, Status> {
        let compressed = match flag {
            0 => false,
            1 => match &self.encoding {
                StreamEncoding::Known(_) => true,
                // compression.md, test case 6: the flag without an encoding is INTERNAL.
                StreamEncoding::Identity => {
                    return Err(Status::internal(
                        "compressed flag set on a message, but the stream's grpc-encoding is \
                         identity or absent",
                    ));
                }
                // compression.md: data compressed in a way the receiver does not support is
                // INTERNAL on the client (a server rejects the encoding at the headers).
                StreamEncoding::Unknown(name) => {
                    return Err(Status::internal(format!(
                        "message compressed with unsupported encoding {name:?} (supported: \
                         {SUPPORTED})"
                    )));
                }
            },
            other => {
                return Err(Status::internal(format!(
                    "invalid compressed flag {other} in message prefix"
                )));
            }
        };
        if len > self.max_len {
            return Err(Status::message_too_large("received", len, self.max_len));
        }
        Ok(compressed)
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
    use crate::status::Code;

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
        let mut d = Decoder::new(100, StreamEncoding::Identity);
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
        let mut d = Decoder::new(1 << 20, StreamEncoding::Identity);
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
        let mut d = Decoder::new(100, StreamEncoding::Identity);
        d.push(Bytes::from_static(&[0, 0, 0]));
        assert!(d.next_message().unwrap().is_none());
        assert_eq!(d.finish().unwrap_err().code(), Code::Internal);

        let mut d = Decoder::new(100, StreamEncoding::Identity);
        d.push(Bytes::from_static(&[0, 0, 0, 0, 9, 1, 2]));
        assert!(d.next_message().unwrap().is_none());
        let err = d.finish().unwrap_err();
        assert_eq!(err.code(), Code::Internal);
        assert!(err.message().contains("2 of 9"), "{err}");
    }

    #[test]
    fn huge_prefix_is_rejected_before_the_body() {
        let mut d = Decoder::new(DEFAULT_MAX_RECV_MESSAGE_SIZE, StreamEncoding::Identity);
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
        let mut d = Decoder::new(100, StreamEncoding::Identity);
        d.push(Bytes::from_static(&[1, 0, 0, 0, 1, 0]));
        assert_eq!(d.next_message().unwrap_err().code(), Code::Internal);
        let mut d = Decoder::new(100, StreamEncoding::Identity);
        d.push(Bytes::from_static(&[2, 0, 0, 0, 0]));
        assert_eq!(d.next_message().unwrap_err().code(), Code::Internal);
    }

    fn wire(f: Framed) -> Bytes {
        let mut all = BytesMut::from(&f.head[..]);
        if let Some(t) = f.tail {
            all.extend_from_slice(&t);
        }
        all.freeze()
    }

    #[test]
    fn compressed_messages_round_trip_with_their_flag() {
        let payload = Bytes::from(vec![42u8; 100_000]);
        for c in [Compression::Gzip, Compression::Deflate] {
            let mut d = Decoder::new(1 << 20, StreamEncoding::Known(c));
            let z =
                wire(frame_message(&super::super::BytesCodec, &payload, usize::MAX, c).unwrap());
            assert_eq!(z[0], 1);
            assert!(z.len() < 1000, "{c}: {}", z.len());
            // A compressed and an uncompressed message on one stream, split at every 7 bytes.
            let plain = wire(frame_bytes(Bytes::from_static(b"plain"), usize::MAX).unwrap());
            let all = [&z[..], &plain[..]].concat();
            let mut got = Vec::new();
            for piece in all.chunks(7) {
                d.push(Bytes::copy_from_slice(piece));
                while let Some(m) = d.next_message().unwrap() {
                    got.push((m, d.last_compressed()));
                }
            }
            assert_eq!(got.len(), 2);
            assert_eq!(got[0], (payload.clone(), true));
            assert_eq!(got[1], (Bytes::from_static(b"plain"), false));
            d.finish().unwrap();
        }
    }

    #[test]
    fn typed_messages_compress_too() {
        let msg = "x".repeat(10_000);
        struct Text;
        impl Codec for Text {
            type Encode = String;
            type Decode = String;
            fn encode(&self, item: &String, buf: &mut BytesMut) -> Result<(), Status> {
                buf.extend_from_slice(item.as_bytes());
                Ok(())
            }
            fn decode(&self, buf: Bytes) -> Result<String, Status> {
                Ok(String::from_utf8_lossy(&buf).into_owned())
            }
        }
        let z = wire(frame_message(&Text, &msg, usize::MAX, Compression::Gzip).unwrap());
        let mut d = Decoder::new(1 << 20, StreamEncoding::Known(Compression::Gzip));
        d.push(z);
        assert_eq!(d.next_message().unwrap().unwrap(), msg.as_bytes());
        assert!(d.last_compressed());
        // The send limit applies to the message before compression.
        let err = frame_message(&Text, &msg, 9_999, Compression::Gzip).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
    }

    #[test]
    fn inflated_size_is_bounded_by_the_limit() {
        let payload = Bytes::from(vec![0u8; 1 << 20]);
        let z = wire(
            frame_message(
                &super::super::BytesCodec,
                &payload,
                usize::MAX,
                Compression::Gzip,
            )
            .unwrap(),
        );
        let mut d = Decoder::new(64 << 10, StreamEncoding::Known(Compression::Gzip));
        d.push(z);
        let err = d.next_message().unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("65536"), "{err}");
    }

    #[test]
    fn corrupt_or_unsupported_compressed_messages_are_internal() {
        let mut d = Decoder::new(100, StreamEncoding::Known(Compression::Deflate));
        d.push(Bytes::from_static(&[1, 0, 0, 0, 3, 1, 2, 3]));
        let err = d.next_message().unwrap_err();
        assert_eq!(err.code(), Code::Internal);
        assert!(err.message().contains("corrupt deflate"), "{err}");

        let mut d = Decoder::new(100, StreamEncoding::Unknown("snappy".into()));
        d.push(Bytes::from_static(&[0, 0, 0, 0, 1, 9]));
        assert_eq!(&d.next_message().unwrap().unwrap()[..], &[9]);
        d.push(Bytes::from_static(&[1, 0, 0, 0, 1, 9]));
        let err = d.next_message().unwrap_err();
        assert_eq!(err.code(), Code::Internal);
        assert!(
            err.message().contains("snappy") && err.message().contains("gzip"),
            "{err}"
        );
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

    /// Pushes one message of `fill` bytes split into 1000-byte chunks and returns it.
    fn gathered(d: &mut Decoder, fill: u8, len: usize) -> Bytes {
        let wire = framed(&vec![fill; len]);
        for chunk in wire.chunks(1000) {
            d.push(Bytes::copy_from_slice(chunk));
        }
        d.next_message().unwrap().unwrap()
    }

    #[test]
    fn gathered_messages_reuse_a_dropped_buffer_and_never_overwrite_a_held_one() {
        let mut d = Decoder::new(1 << 20, StreamEncoding::Identity);
        let first = gathered(&mut d, 1, 10_000);
        let first_ptr = first.as_ptr();
        drop(first);
        let second = gathered(&mut d, 2, 10_000);
        assert_eq!(
            second.as_ptr(),
            first_ptr,
            "the dropped message's buffer is reused"
        );
        // Held: the next message gets its own buffer and the held one keeps its bytes.
        let third = gathered(&mut d, 3, 10_000);
        assert_ne!(third.as_ptr(), second.as_ptr());
        assert!(second.iter().all(|&b| b == 2) && second.len() == 10_000);
        assert!(third.iter().all(|&b| b == 3) && third.len() == 10_000);
        drop((second, third));
        // A buffer much larger than the message is not kept for it.
        let small = gathered(&mut d, 4, 2_000);
        assert!(small.iter().all(|&b| b == 4) && small.len() == 2_000);
        d.finish().unwrap();
    }
}
