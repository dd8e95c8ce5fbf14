//! [`Response`]: a single response message with its initial and trailing metadata.

use crate::metadata::Metadata;

/// One response message and the metadata around it, for unary and client-streaming calls.
///
/// Clients receive it; unary and client-streaming server handlers return it.
#[derive(Debug, Clone, Default)]
pub struct Response<T> {
    metadata: Metadata,
    message: T,
    trailers: Metadata,
    compressed: bool,
}

impl<T> Response<T> {
    /// A response carrying `message` and no metadata.
    pub fn new(message: T) -> Response<T> {
        Response {
            metadata: Metadata::new(),
            message,
            trailers: Metadata::new(),
            compressed: false,
        }
    }

    /// A response from all its parts.
    pub fn from_parts(metadata: Metadata, message: T, trailers: Metadata) -> Response<T> {
        Response {
            metadata,
            message,
            trailers,
            compressed: false,
        }
    }

    pub(crate) fn with_compressed(mut self, compressed: bool) -> Response<T> {
        self.compressed = compressed;
        self
    }

    /// Whether the message arrived compressed (its Compressed-Flag was set), for responses a
    /// client received; it was inflated either way. Always false on a response a handler
    /// builds: servers choose compression through
    /// [`CallContext::set_response_compression`](crate::CallContext::set_response_compression).
    pub fn compressed(&self) -> bool {
        self.compressed
    }

    /// The initial metadata (response headers).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Mutable initial metadata, for handlers.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// The message.
    pub fn message(&self) -> &T {
        &self.message
    }

    /// Takes the message.
    pub fn into_message(self) -> T {
        self.message
    }

    /// The trailing metadata.
    pub fn trailers(&self) -> &Metadata {
        &self.trailers
    }

    /// Mutable trailing metadata, for handlers.
    pub fn trailers_mut(&mut self) -> &mut Metadata {
        &mut self.trailers
    }

    /// Splits into initial metadata, message and trailing metadata.
    pub fn into_parts(self) -> (Metadata, T, Metadata) {
        (self.metadata, self.message, self.trailers)
    }
}
