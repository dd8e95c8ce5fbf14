//! Message encoding: the [`Codec`] trait, [`ProstCodec`], gRPC's length-prefixed framing, and
//! message [`Compression`].

pub(crate) mod compress;
pub(crate) mod frame;

pub use compress::{Compression, SendOptions};

use std::fmt;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};

use crate::status::Status;

/// Turns typed messages into bytes and back.
///
/// `encode` appends the serialized message to a buffer that already holds the 5-byte gRPC
/// prefix, so a typed message goes out as one buffer with no second copy.
pub trait Codec: Send + Sync + 'static {
    /// The type this codec serializes (requests on a client, responses on a server).
    type Encode: Send + 'static;
    /// The type this codec parses (responses on a client, requests on a server).
    type Decode: Send + 'static;

    /// Appends the serialized `item` to `buf`.
    fn encode(&self, item: &Self::Encode, buf: &mut BytesMut) -> Result<(), Status>;

    /// Parses one message; `buf` is exactly the message payload.
    fn decode(&self, buf: Bytes) -> Result<Self::Decode, Status>;

    /// The serialized payload when `item` already is raw bytes, so the framer can send it
    /// without copying; the default (None) makes the framer call [`Codec::encode`].
    fn as_bytes(&self, item: &Self::Encode) -> Option<Bytes> {
        let _ = item;
        None
    }
}

/// The codec for prost messages: encodes `E`, decodes `D`.
pub struct ProstCodec<E, D> {
    _types: PhantomData<fn(E) -> D>,
}

impl<E, D> ProstCodec<E, D> {
    /// A codec for the given message types.
    pub fn new() -> Self {
        ProstCodec {
            _types: PhantomData,
        }
    }
}

impl<E, D> Default for ProstCodec<E, D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E, D> Clone for ProstCodec<E, D> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<E, D> fmt::Debug for ProstCodec<E, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProstCodec")
    }
}

impl<E, D> Codec for ProstCodec<E, D>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;

    fn encode(&self, item: &E, buf: &mut BytesMut) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| Status::internal(format!("failed to encode message: {e}")))
    }

    fn decode(&self, buf: Bytes) -> Result<D, Status> {
        D::decode(buf).map_err(|e| Status::internal(format!("failed to decode message: {e}")))
    }
}

/// The identity codec: messages are raw bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;

    fn encode(&self, item: &Bytes, buf: &mut BytesMut) -> Result<(), Status> {
        buf.extend_from_slice(item);
        Ok(())
    }

    fn decode(&self, buf: Bytes) -> Result<Bytes, Status> {
        Ok(buf)
    }

    fn as_bytes(&self, item: &Bytes) -> Option<Bytes> {
        Some(item.clone())
    }
}
