//! The client: [`Channel`], per-call options, and the call handles for the four call kinds.

mod call;
mod channel;
mod options;
mod resolve;
mod target;

pub use call::{Client, ResponseFuture, Sender, Streaming};
pub use channel::{Channel, ChannelBuilder};
pub(crate) use options::check_http2_settings;
pub use options::{
    CallOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONNECTION_WINDOW, DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_STREAM_WINDOW,
};
pub use resolve::{DEFAULT_DNS_REFRESH_INTERVAL, Resolver, StaticResolver};
