//! [`Http2Settings`]: the HTTP/2 connection settings a channel and a server both have (flow
//! control windows and the frame size), and the checks of their ranges shared by both sides'
//! settings.

use std::time::Duration;

use crate::client::DEFAULT_MAX_FRAME_SIZE;
use crate::proto::ping::WindowConfig;
use crate::status::Status;

/// Largest window HTTP/2 allows (RFC 9113 §6.9.1).
const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Frame sizes HTTP/2 allows (RFC 9113 §6.5.2).
const FRAME_SIZES: std::ops::RangeInclusive<u32> = 16_384..=16_777_215;

/// HTTP/2 flow control and framing, the same on both sides of a connection: part of
/// [`ChannelSettings`](crate::ChannelSettings) and [`ServerSettings`](crate::ServerSettings).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Http2Settings {
    /// Initial stream window. Windows adapt to the measured bandwidth-delay product by
    /// default; setting a window pins both, as in grpc-go (the other keeps
    /// [`DEFAULT_STREAM_WINDOW`](crate::client::DEFAULT_STREAM_WINDOW) or
    /// [`DEFAULT_CONNECTION_WINDOW`](crate::client::DEFAULT_CONNECTION_WINDOW)).
    pub initial_stream_window_size: Option<u32>,
    /// Initial connection window; set, it pins the windows like the stream window does.
    pub initial_connection_window_size: Option<u32>,
    /// Whether windows grow from bandwidth-delay-product estimates, as grpc-go's and C-core's
    /// do (default: yes unless a window is set; `true` with windows set grows from them).
    pub adaptive_window: Option<bool>,
    /// Largest frame accepted (default 16 KiB, the RFC 9113 initial value).
    pub max_frame_size: u32,
}

impl Default for Http2Settings {
    fn default() -> Http2Settings {
        Http2Settings {
            initial_stream_window_size: None,
            initial_connection_window_size: None,
            adaptive_window: None,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

impl Http2Settings {
    /// Checks each field's range: INVALID_ARGUMENT naming the first out of range.
    pub fn check_values(&self) -> Result<(), Status> {
        check_window("initial stream window", self.initial_stream_window_size)?;
        check_window(
            "initial connection window",
            self.initial_connection_window_size,
        )?;
        if !FRAME_SIZES.contains(&self.max_frame_size) {
            return Err(Status::invalid_argument(format!(
                "max frame size {} must be between {} and {} (RFC 9113 §6.5.2)",
                self.max_frame_size,
                FRAME_SIZES.start(),
                FRAME_SIZES.end()
            )));
        }
        Ok(())
    }

    /// Checks the fields and that the connection window is at least the stream window.
    pub fn check(&self) -> Result<(), Status> {
        self.check_values()?;
        let windows = self.windows();
        if windows.connection < windows.stream {
            return Err(Status::invalid_argument(format!(
                "initial connection window {} must be at least the stream window {}",
                windows.connection, windows.stream
            )));
        }
        Ok(())
    }

    /// The windows these settings resolve to.
    pub(crate) fn windows(&self) -> WindowConfig {
        WindowConfig::resolve(
            self.initial_stream_window_size,
            self.initial_connection_window_size,
            self.adaptive_window,
        )
    }
}

/// Checks a window setting (1 to 2^31-1 when set).
fn check_window(name: &str, value: Option<u32>) -> Result<(), Status> {
    match value {
        Some(v) if v == 0 || v > MAX_WINDOW => Err(Status::invalid_argument(format!(
            "{name} {v} must be between 1 and {MAX_WINDOW}"
        ))),
        _ => Ok(()),
    }
}

/// Checks that each named duration of a settings value is above zero.
pub(crate) fn check_positive(durations: &[(&str, Duration)]) -> Result<(), Status> {
    match durations.iter().find(|(_, d)| d.is_zero()) {
        Some((name, _)) => Err(Status::invalid_argument(format!(
            "{name} must be above zero"
        ))),
        None => Ok(()),
    }
}
