//! The client: [`Channel`], per-call options, and the call handles for the four call kinds.

mod backoff;
mod balance;
mod builder;
mod call;
mod channel;
mod connection;
mod dns;
mod endpoints;
mod health;
mod hedge;
mod options;
mod recv;
mod resolve;
mod retry;
mod send;
pub(crate) mod service_config;
mod settings;
mod state;
mod stats;
mod subchannel;
pub(crate) mod target;
mod typed;

pub use backoff::{
    BackoffConfig, DEFAULT_BACKOFF_JITTER, DEFAULT_BACKOFF_MULTIPLIER, DEFAULT_INITIAL_BACKOFF,
    DEFAULT_MAX_BACKOFF,
};
pub use balance::{LbPolicy, Picker};
pub use builder::ChannelBuilder;
pub use channel::Channel;
pub use options::{
    CallDefaults, CallOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONNECTION_WINDOW,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT, DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_STREAM_WINDOW,
};
pub use recv::{ResponseFuture, Streaming};
pub use resolve::{DEFAULT_DNS_REFRESH_INTERVAL, Resolver, StaticResolver};
pub use send::Sender;
pub use settings::{
    ChannelSettings, DEFAULT_PER_CALL_RETRY_BUFFER_SIZE, DEFAULT_RETRY_BUFFER_SIZE,
};
pub use state::ConnectivityState;
pub use stats::{ChannelStats, EndpointStats};
#[cfg(test)]
pub(crate) use target::{Target, TargetKind};
pub use typed::Client;
