//! [`Client`]: a typed client over a channel, encoding and decoding through a codec.

use std::fmt;
use std::sync::Arc;

use super::call::EncodeFn;
use super::channel::Channel;
use super::options::{CallDefaults, CallOptions};
use super::recv::{RawStreaming, ResponseFuture, Streaming, read_unary};
use super::send::Sender;
use super::send::SenderState;
use crate::codec::frame::frame_message;
use crate::codec::{Codec, Compression};
use crate::response::Response;
use crate::status::Status;

/// A typed client over a [`Channel`]: messages go through the codec `C`.
pub struct Client<C> {
    channel: Channel,
    codec: Arc<C>,
    /// Filled into every call's options; `None` for none (no allocation for the common case).
    defaults: Option<Arc<CallDefaults>>,
}

impl<C> Clone for Client<C> {
    fn clone(&self) -> Self {
        Client {
            channel: self.channel.clone(),
            codec: self.codec.clone(),
            defaults: self.defaults.clone(),
        }
    }
}

impl<C> fmt::Debug for Client<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl<C: Codec> Client<C> {
    /// A client that sends on `channel` with `codec`.
    pub fn new(channel: Channel, codec: C) -> Client<C> {
        Client {
            channel,
            codec: Arc::new(codec),
            defaults: None,
        }
    }

    /// A client whose calls take `defaults` for what their own options leave unset (a
    /// `CallDefaults`, or an `Arc` of one to share it between clients without copying).
    pub fn with_defaults(
        channel: Channel,
        codec: C,
        defaults: impl Into<Arc<CallDefaults>>,
    ) -> Client<C> {
        Client {
            channel,
            codec: Arc::new(codec),
            defaults: Some(defaults.into()),
        }
    }

    /// The channel this client uses.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The call defaults, if any were given.
    pub fn defaults(&self) -> Option<&CallDefaults> {
        self.defaults.as_deref()
    }

    /// The call's options: its own, then the client's defaults, then the service config.
    fn options(&self, path: &str, options: CallOptions) -> CallOptions {
        let options = match &self.defaults {
            Some(defaults) => defaults.apply(options),
            None => options,
        };
        self.channel.method_options(path, options)
    }

    fn encoder(&self) -> EncodeFn<C::Encode> {
        let codec = self.codec.clone();
        Arc::new(move |msg, max, compression| frame_message(&*codec, msg, max, compression))
    }

    fn streaming(&self, raw: RawStreaming) -> Streaming<C::Decode> {
        let codec = self.codec.clone();
        Streaming {
            raw,
            decode: Arc::new(move |bytes| codec.decode(bytes)),
            fused: false,
        }
    }

    fn max_send(&self, options: &CallOptions) -> usize {
        options
            .max_send_message_size
            .unwrap_or(self.channel.config().max_send_message_size)
    }

    fn compression(&self, options: &CallOptions) -> Compression {
        options
            .compression
            .unwrap_or(self.channel.config().compression)
    }

    /// Starts a call whose whole request is `message` (unary and server-streaming calls).
    async fn start_with(
        &self,
        path: &str,
        message: &C::Encode,
        options: CallOptions,
    ) -> Result<RawStreaming, Status> {
        let options = self.options(path, options);
        let framed = frame_message(
            &*self.codec,
            message,
            self.max_send(&options),
            self.compression(&options),
        )?;
        let (_call, raw) = self
            .channel
            .start(path, options, Some(framed), true)
            .await?;
        Ok(raw)
    }

    /// A unary call: one request, one response.
    pub async fn unary(
        &self,
        path: &str,
        message: &C::Encode,
        options: CallOptions,
    ) -> Result<Response<C::Decode>, Status> {
        let raw = self.start_with(path, message, options).await?;
        read_unary(&mut self.streaming(raw)).await
    }

    /// A server-streaming call: one request, a stream of responses.
    pub async fn server_streaming(
        &self,
        path: &str,
        message: &C::Encode,
        options: CallOptions,
    ) -> Result<Streaming<C::Decode>, Status> {
        let raw = self.start_with(path, message, options).await?;
        Ok(self.streaming(raw))
    }

    /// A client-streaming call: send requests, then await the one response.
    pub async fn client_streaming(
        &self,
        path: &str,
        options: CallOptions,
    ) -> Result<(Sender<C::Encode>, ResponseFuture<C::Decode>), Status> {
        let (sender, stream) = self.bidi_streaming(path, options).await?;
        Ok((sender, ResponseFuture { stream }))
    }

    /// A bidirectional-streaming call: a sender and a receiver that may live on different tasks.
    pub async fn bidi_streaming(
        &self,
        path: &str,
        options: CallOptions,
    ) -> Result<(Sender<C::Encode>, Streaming<C::Decode>), Status> {
        let options = self.options(path, options);
        let compression = self.compression(&options);
        let (call, raw) = self.channel.start(path, options, None, false).await?;
        let sender = Sender {
            state: Arc::new(SenderState { call, compression }),
            encode: self.encoder(),
        };
        Ok((sender, self.streaming(raw)))
    }
}
