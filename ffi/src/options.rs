//! Option objects: `plexus_channel_options` (one setter per field of core's
//! `ChannelSettings`) and `plexus_call_options` (core's `CallOptions`).

use std::ffi::{c_char, c_void};
use std::time::Duration;

use core_plexus::codec::Compression;
use core_plexus::{BackoffConfig, CallOptions, Certificate, ChannelSettings, Identity, LbPolicy};

use crate::boundary::boundary;
use crate::error::{Error, PLEXUS_OK, Result, plexus_result};
use crate::handle::{ArcHandle, BoxHandle, str_arg, write_out};
use crate::hooks::{
    CallCredentials, CallHooks, plexus_call_credentials_fn, plexus_call_end_hook,
    plexus_call_start_hook,
};
use crate::metadata::plexus_metadata;

/// Settings for `plexus_channel_new`. Owned by the caller; free with
/// `plexus_channel_options_free`. A channel copies what it needs, so the options may be freed
/// or reused right after. Not thread-safe while being modified.
///
/// Every setting of the Rust `ChannelBuilder` has a setter, except the three that take Rust
/// objects: the executor (the library's runtime runs every channel), the connector (TCP and
/// Unix sockets) and the resolver (use an `ipv4:`, `ipv6:` or `unix:` target for a fixed
/// address list).
pub struct plexus_channel_options {
    _private: [u8; 0],
}

impl BoxHandle for plexus_channel_options {
    type Rust = ChannelOptions;
    const NAME: &'static str = "options";
}

/// What C sets: core's [`ChannelSettings`], which the setters write field by field, and
/// whether the channel may share a connection pool. Two channels to the same target share one
/// when these compare equal (and both allow sharing).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ChannelOptions {
    pub(crate) settings: ChannelSettings,
    /// Whether the channel may share a connection pool.
    pub(crate) shared: bool,
    /// Functions run around every call, if set.
    pub(crate) hooks: Option<CallHooks>,
    /// The callback that adds each call's credentials, if set.
    pub(crate) credentials: Option<CallCredentials>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            settings: ChannelSettings::default(),
            shared: true,
            hooks: None,
            credentials: None,
        }
    }
}

/// A compression name argument: `identity`, `gzip` or `deflate`.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
pub(crate) unsafe fn compression_arg(name: *const c_char) -> Result<Compression> {
    // SAFETY: per this function's contract.
    let name = unsafe { str_arg(name, "compression") }?;
    Compression::from_name(name).ok_or_else(|| {
        Error::invalid(format!(
            "unknown compression {name:?} (identity, gzip or deflate)"
        ))
    })
}

/// Runs `set` on the settings behind `ptr`, then core's check of each value
/// ([`ChannelSettings::check_values`]); on an error the settings stay as they were.
///
/// # Safety
/// `ptr` is NULL or live.
unsafe fn set(
    ptr: *mut plexus_channel_options,
    set: impl FnOnce(&mut ChannelSettings) -> Result<()>,
) -> Result<plexus_result> {
    // SAFETY: per this function's contract.
    let options = unsafe { plexus_channel_options::as_mut(ptr) }?;
    let mut next = options.settings.clone();
    set(&mut next)?;
    next.check_values().map_err(|s| Error::from_setting(&s))?;
    options.settings = next;
    Ok(PLEXUS_OK)
}

/// Creates channel options with every setting at its default, owned by the caller (free with
/// `plexus_channel_options_free`).
///
/// Returns PLEXUS_OK and writes `*out`; PLEXUS_ERR_NULL_ARGUMENT if `out` is NULL.
///
/// # Safety
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_new(
    out: *mut *mut plexus_channel_options,
) -> plexus_result {
    boundary("plexus_channel_options_new", || {
        crate::handle::check_out(out, "out")?;
        let options = plexus_channel_options::into_raw(ChannelOptions::default());
        // SAFETY: out was checked and is writable.
        unsafe { write_out(out, "out", options) }?;
        Ok(PLEXUS_OK)
    })
}

/// Frees channel options. NULL is a no-op.
///
/// # Safety
/// `options` is NULL or live, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_free(options: *mut plexus_channel_options) {
    boundary("plexus_channel_options_free", || {
        // SAFETY: the caller gives up a live object or NULL.
        drop(unsafe { plexus_channel_options::take(options) });
        Ok(())
    })
}

/// Whether the channel may share its connection pool with other channels created with the
/// same target and equal options, process-wide (default true). False gives the channel its
/// own connections.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_shared(
    options: *mut plexus_channel_options,
    shared: bool,
) -> plexus_result {
    boundary("plexus_channel_options_set_shared", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            plexus_channel_options::as_mut(options).map(|o| {
                o.shared = shared;
                PLEXUS_OK
            })
        }
    })
}

/// Largest message the channel accepts, in bytes (default 4 MiB). Larger ones fail the call
/// with RESOURCE_EXHAUSTED.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_max_receive_message_size(
    options: *mut plexus_channel_options,
    bytes: usize,
) -> plexus_result {
    boundary(
        "plexus_channel_options_set_max_receive_message_size",
        || {
            // SAFETY: the caller passes a live object or NULL (checked).
            unsafe {
                set(options, |o| {
                    o.max_receive_message_size = bytes;
                    Ok(())
                })
            }
        },
    )
}

/// Largest message the channel sends, in bytes (default unlimited).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_max_send_message_size(
    options: *mut plexus_channel_options,
    bytes: usize,
) -> plexus_result {
    boundary("plexus_channel_options_set_max_send_message_size", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.max_send_message_size = bytes;
                Ok(())
            })
        }
    })
}

/// Initial HTTP/2 stream window in bytes (1 to 2^31-1). By default windows adapt to the
/// measured bandwidth-delay product; setting a window pins both windows.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL;
/// PLEXUS_ERR_INVALID_ARGUMENT when out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_initial_stream_window_size(
    options: *mut plexus_channel_options,
    bytes: u32,
) -> plexus_result {
    boundary(
        "plexus_channel_options_set_initial_stream_window_size",
        || {
            // SAFETY: the caller passes a live object or NULL (checked).
            unsafe {
                set(options, |o| {
                    o.http2.initial_stream_window_size = Some(bytes);
                    Ok(())
                })
            }
        },
    )
}

/// Initial HTTP/2 connection window in bytes (at least the stream window, at most 2^31-1);
/// pins the windows like the stream window does. Checked by `plexus_channel_new`.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL;
/// PLEXUS_ERR_INVALID_ARGUMENT when out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_initial_connection_window_size(
    options: *mut plexus_channel_options,
    bytes: u32,
) -> plexus_result {
    boundary(
        "plexus_channel_options_set_initial_connection_window_size",
        || {
            // SAFETY: the caller passes a live object or NULL (checked).
            unsafe {
                set(options, |o| {
                    o.http2.initial_connection_window_size = Some(bytes);
                    Ok(())
                })
            }
        },
    )
}

/// Whether flow-control windows grow from bandwidth-delay-product estimates (default: yes
/// unless a window size is set).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_adaptive_window(
    options: *mut plexus_channel_options,
    adaptive: bool,
) -> plexus_result {
    boundary("plexus_channel_options_set_adaptive_window", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.http2.adaptive_window = Some(adaptive);
                Ok(())
            })
        }
    })
}

/// Sends a keepalive PING after `ms` milliseconds without a frame from the server; 0 turns
/// keepalive off (the default).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_keepalive_time_ms(
    options: *mut plexus_channel_options,
    ms: u64,
) -> plexus_result {
    boundary("plexus_channel_options_set_keepalive_time_ms", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.keepalive_time = (ms > 0).then(|| Duration::from_millis(ms));
                Ok(())
            })
        }
    })
}

/// How long a keepalive PING may go unanswered before the connection is declared dead, in
/// milliseconds (default 20000; above 0).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL;
/// PLEXUS_ERR_INVALID_ARGUMENT for 0.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_keepalive_timeout_ms(
    options: *mut plexus_channel_options,
    ms: u64,
) -> plexus_result {
    boundary("plexus_channel_options_set_keepalive_timeout_ms", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.keepalive_timeout = Duration::from_millis(ms);
                Ok(())
            })
        }
    })
}

/// Whether keepalive PINGs go out while no call is open (default false).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_keepalive_permit_without_calls(
    options: *mut plexus_channel_options,
    permit: bool,
) -> plexus_result {
    boundary(
        "plexus_channel_options_set_keepalive_permit_without_calls",
        || {
            // SAFETY: the caller passes a live object or NULL (checked).
            unsafe {
                set(options, |o| {
                    o.keepalive_permit_without_calls = permit;
                    Ok(())
                })
            }
        },
    )
}

/// Largest HTTP/2 frame the channel accepts, in bytes (16384 to 16777215, default 16384).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL;
/// PLEXUS_ERR_INVALID_ARGUMENT when out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_max_frame_size(
    options: *mut plexus_channel_options,
    bytes: u32,
) -> plexus_result {
    boundary("plexus_channel_options_set_max_frame_size", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.http2.max_frame_size = bytes;
                Ok(())
            })
        }
    })
}

/// Time allowed to establish a connection, in milliseconds (default 20000; above 0).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL;
/// PLEXUS_ERR_INVALID_ARGUMENT for 0.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_connect_timeout_ms(
    options: *mut plexus_channel_options,
    ms: u64,
) -> plexus_result {
    boundary("plexus_channel_options_set_connect_timeout_ms", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.connect_timeout = Duration::from_millis(ms);
                Ok(())
            })
        }
    })
}

/// Whether to open another connection to an endpoint when every connection reached the
/// server's MAX_CONCURRENT_STREAMS (default true); false makes calls queue for a stream.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_multiple_connections(
    options: *mut plexus_channel_options,
    enabled: bool,
) -> plexus_result {
    boundary("plexus_channel_options_set_multiple_connections", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.multiple_connections = enabled;
                Ok(())
            })
        }
    })
}

/// Cap on connections per endpoint with multiple connections on (default 16; at least 1).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL;
/// PLEXUS_ERR_INVALID_ARGUMENT for 0.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_max_connections_per_endpoint(
    options: *mut plexus_channel_options,
    connections: usize,
) -> plexus_result {
    boundary(
        "plexus_channel_options_set_max_connections_per_endpoint",
        || {
            // SAFETY: the caller passes a live object or NULL (checked).
            unsafe {
                set(options, |o| {
                    o.max_connections_per_endpoint = connections;
                    Ok(())
                })
            }
        },
    )
}

/// Reconnect backoff, as in gRPC's connection-backoff spec (default: 1000 ms initial, x1.6,
/// 0.2 jitter, 120000 ms max). Needs 0 < initial <= max, multiplier >= 1, 0 <= jitter < 1.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL;
/// PLEXUS_ERR_INVALID_ARGUMENT when a value is out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_backoff(
    options: *mut plexus_channel_options,
    initial_ms: u64,
    multiplier: f64,
    jitter: f64,
    max_ms: u64,
) -> plexus_result {
    boundary("plexus_channel_options_set_backoff", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.backoff = BackoffConfig {
                    initial: Duration::from_millis(initial_ms),
                    multiplier,
                    jitter,
                    max: Duration::from_millis(max_ms),
                };
                Ok(())
            })
        }
    })
}

/// Closes connections after this many milliseconds without calls (default 1800000, 30
/// minutes); the next call reconnects.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL;
/// PLEXUS_ERR_INVALID_ARGUMENT for 0.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_idle_timeout_ms(
    options: *mut plexus_channel_options,
    ms: u64,
) -> plexus_result {
    boundary("plexus_channel_options_set_idle_timeout_ms", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.idle_timeout = Duration::from_millis(ms);
                Ok(())
            })
        }
    })
}

/// Compresses request messages with `compression` (NUL-terminated: `"identity"`, the
/// default, `"gzip"` or `"deflate"`) unless a call sets its own. Responses are inflated
/// whatever this says.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument;
/// PLEXUS_ERR_INVALID_UTF8; PLEXUS_ERR_INVALID_ARGUMENT for another name.
///
/// # Safety
/// `options` is live; `compression` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_compression(
    options: *mut plexus_channel_options,
    compression: *const c_char,
) -> plexus_result {
    boundary("plexus_channel_options_set_compression", || {
        // SAFETY: compression is a C string or NULL (checked).
        let compression = unsafe { compression_arg(compression) }?;
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.compression = compression;
                Ok(())
            })
        }
    })
}

/// Whether the channel connects over TLS (default: only for `https://` targets, trusting the
/// system's root certificates). The other `tls` setters turn it on too; false turns it off
/// and forgets them. TLS with an `http://` target is refused by `plexus_channel_new`.
///
/// The server's certificate is verified against the server name (the target's host, or
/// `plexus_channel_options_set_tls_server_name`), which also goes out as SNI. HTTP/2 is
/// negotiated by ALPN, offering only `h2` as gRPC requires: a server that does not agree to
/// `h2` fails the connection. A connection that fails its handshake fails the calls waiting
/// for it with PLEXUS_ERR_RPC and UNAVAILABLE, and the status message (and
/// `plexus_last_error()`) names the cause after "TLS handshake failed: ", e.g. "the
/// server's certificate is not signed by a trusted CA (unknown issuer)", "name mismatch:
/// certificate not valid for name \"wrong.example\"; certificate is only valid for ...",
/// "the server did not negotiate HTTP/2 (ALPN \"h2\"), which gRPC requires", or, over TLS
/// 1.3 where a server checks the client's certificate after the handshake, "the server
/// requires a client certificate and none is configured".
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_tls(
    options: *mut plexus_channel_options,
    enabled: bool,
) -> plexus_result {
    boundary("plexus_channel_options_set_tls", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.tls = enabled.then(|| o.tls.take().unwrap_or_default());
                Ok(())
            })
        }
    })
}

/// Trusts the CA certificate(s) in `len` bytes of PEM at `pem` and turns TLS on. The bytes
/// are copied: the caller keeps `pem` and may free it when this returns. May be called again
/// to add more. Once a CA is given the system roots are no longer trusted unless
/// `plexus_channel_options_set_tls_native_roots(options, true)`. The PEM is parsed by
/// `plexus_channel_new`, which fails with PLEXUS_ERR_INVALID_ARGUMENT ("channel TLS config:
/// CA certificate: ...") when it is malformed or holds no certificate.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument;
/// PLEXUS_ERR_INVALID_ARGUMENT for an empty PEM.
///
/// # Safety
/// `options` is live; `pem` is valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_add_tls_ca_pem(
    options: *mut plexus_channel_options,
    pem: *const u8,
    len: usize,
) -> plexus_result {
    boundary("plexus_channel_options_add_tls_ca_pem", || {
        // SAFETY: pem is valid for len bytes, or NULL (checked).
        let pem = unsafe { crate::handle::bytes_arg(pem, len, "pem") }?;
        if pem.is_empty() {
            return Err(Error::invalid("the CA PEM is empty"));
        }
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                let tls = o.tls.take().unwrap_or_default();
                o.tls = Some(tls.ca_certificate(Certificate::from_pem(pem)));
                Ok(())
            })
        }
    })
}

/// Whether TLS trusts the operating system's root certificates (default: true when no CA is
/// given); turns TLS on. They are loaded once per process, by the first `plexus_channel_new`
/// that trusts them, which fails with PLEXUS_ERR_INVALID_ARGUMENT ("no system root
/// certificates found ...") when the system has none.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_tls_native_roots(
    options: *mut plexus_channel_options,
    enabled: bool,
) -> plexus_result {
    boundary("plexus_channel_options_set_tls_native_roots", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                let tls = o.tls.take().unwrap_or_default();
                o.tls = Some(tls.native_roots(enabled));
                Ok(())
            })
        }
    })
}

/// Verifies the server's certificate against `name` (a NUL-terminated DNS name or IP
/// address; copied, the caller keeps `name`) instead of the target's host, sends it as SNI
/// and uses it as `:authority`; turns TLS on. A name that is neither makes
/// `plexus_channel_new` fail with PLEXUS_ERR_INVALID_ARGUMENT.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument;
/// PLEXUS_ERR_INVALID_UTF8; PLEXUS_ERR_INVALID_ARGUMENT for an empty name.
///
/// # Safety
/// `options` is live; `name` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_tls_server_name(
    options: *mut plexus_channel_options,
    name: *const c_char,
) -> plexus_result {
    boundary("plexus_channel_options_set_tls_server_name", || {
        // SAFETY: name is a C string or NULL (checked).
        let name = unsafe { str_arg(name, "name") }?;
        if name.is_empty() {
            return Err(Error::invalid("the TLS server name is empty"));
        }
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                let tls = o.tls.take().unwrap_or_default();
                o.tls = Some(tls.server_name(name));
                Ok(())
            })
        }
    })
}

/// The client certificate for mutual TLS: `cert_len` bytes of PEM certificate chain at
/// `cert_pem` and `key_len` bytes of PEM private key at `key_pem`; turns TLS on. Both are
/// copied: the caller keeps them and may free (and should wipe) the key when this returns. A
/// second call replaces the identity. The PEMs are parsed by `plexus_channel_new`, which
/// fails with PLEXUS_ERR_INVALID_ARGUMENT when one is malformed or the key does not match.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument;
/// PLEXUS_ERR_INVALID_ARGUMENT for an empty PEM.
///
/// # Safety
/// `options` is live; `cert_pem` and `key_pem` are valid for their lengths.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_tls_identity_pem(
    options: *mut plexus_channel_options,
    cert_pem: *const u8,
    cert_len: usize,
    key_pem: *const u8,
    key_len: usize,
) -> plexus_result {
    boundary("plexus_channel_options_set_tls_identity_pem", || {
        // SAFETY: both are valid for their lengths, or NULL (checked).
        let (cert, key) = unsafe {
            (
                crate::handle::bytes_arg(cert_pem, cert_len, "cert_pem")?,
                crate::handle::bytes_arg(key_pem, key_len, "key_pem")?,
            )
        };
        if cert.is_empty() || key.is_empty() {
            return Err(Error::invalid(
                "the certificate and key PEM must not be empty",
            ));
        }
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                let tls = o.tls.take().unwrap_or_default();
                o.tls = Some(tls.identity(Identity::from_pem(cert, key)));
                Ok(())
            })
        }
    })
}

/// How often the channel resolves its target again while it is in use, in milliseconds
/// (default 30000, gRPC's minimum DNS refresh; above 0).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL;
/// PLEXUS_ERR_INVALID_ARGUMENT for 0.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_resolve_interval_ms(
    options: *mut plexus_channel_options,
    ms: u64,
) -> plexus_result {
    boundary("plexus_channel_options_set_resolve_interval_ms", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.resolve_interval = Duration::from_millis(ms);
                Ok(())
            })
        }
    })
}

/// The least time, in milliseconds, between a resolution and one asked for by a failing
/// endpoint or a server's GOAWAY (default 30000, as C-core's
/// `grpc.dns_min_time_between_resolutions_ms`; above 0). One asked for sooner waits.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL;
/// PLEXUS_ERR_INVALID_ARGUMENT for 0.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_min_resolve_interval_ms(
    options: *mut plexus_channel_options,
    ms: u64,
) -> plexus_result {
    boundary("plexus_channel_options_set_min_resolve_interval_ms", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.min_resolve_interval = Duration::from_millis(ms);
                Ok(())
            })
        }
    })
}

/// The load-balancing policy: `"pick_first"` (default) or `"round_robin"` (NUL-terminated,
/// copied).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument;
/// PLEXUS_ERR_INVALID_UTF8; PLEXUS_ERR_INVALID_ARGUMENT for another name.
///
/// # Safety
/// `options` is live; `policy` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_lb_policy(
    options: *mut plexus_channel_options,
    policy: *const c_char,
) -> plexus_result {
    boundary("plexus_channel_options_set_lb_policy", || {
        // SAFETY: policy is a C string or NULL (checked).
        let policy = unsafe { str_arg(policy, "policy") }?;
        let policy = LbPolicy::from_name(policy).ok_or_else(|| {
            Error::invalid(format!(
                "unknown load-balancing policy {policy:?} (pick_first or round_robin)"
            ))
        })?;
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.lb_policy = policy;
                Ok(())
            })
        }
    })
}

/// A prefix for the `user-agent` header (NUL-terminated printable ASCII, copied).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument;
/// PLEXUS_ERR_INVALID_UTF8; PLEXUS_ERR_INVALID_ARGUMENT for other than printable ASCII.
///
/// # Safety
/// `options` is live; `user_agent` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_user_agent(
    options: *mut plexus_channel_options,
    user_agent: *const c_char,
) -> plexus_result {
    boundary("plexus_channel_options_set_user_agent", || {
        // SAFETY: user_agent is a C string or NULL (checked).
        let user_agent = unsafe { str_arg(user_agent, "user_agent") }?;
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.user_agent = Some(user_agent.to_string());
                Ok(())
            })
        }
    })
}

/// The `:authority` of every call instead of the target's (NUL-terminated `host[:port]`,
/// copied), as grpcio's `grpc.default_authority`: to reach a virtual host through an IP
/// address or a proxy. With TLS the server's certificate is checked against it too, unless
/// `plexus_channel_options_set_tls_server_name` names another. A malformed authority fails
/// `plexus_channel_new` with PLEXUS_ERR_INVALID_ARGUMENT.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument;
/// PLEXUS_ERR_INVALID_UTF8.
///
/// # Safety
/// `options` is live; `authority` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_authority(
    options: *mut plexus_channel_options,
    authority: *const c_char,
) -> plexus_result {
    boundary("plexus_channel_options_set_authority", || {
        // SAFETY: authority is a C string or NULL (checked).
        let authority = unsafe { str_arg(authority, "authority") }?;
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.authority = Some(authority.to_string());
                Ok(())
            })
        }
    })
}

/// The default service config: gRPC's service config as JSON (NUL-terminated, copied), with
/// per-method `timeout`, `waitForReady`, `maxRequestMessageBytes`,
/// `maxResponseMessageBytes`, `retryPolicy` or `hedgingPolicy`, and `retryThrottling` and
/// `loadBalancingConfig`. Call options win over it. NULL removes it.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_UTF8;
/// PLEXUS_ERR_INVALID_ARGUMENT for a malformed config, with `plexus_last_error` naming the
/// field (the options keep their previous config).
///
/// # Safety
/// `options` is live; `json` is a NUL-terminated string or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_service_config(
    options: *mut plexus_channel_options,
    json: *const c_char,
) -> plexus_result {
    boundary("plexus_channel_options_set_service_config", || {
        let json = if json.is_null() {
            None
        } else {
            // SAFETY: json is a C string (checked for NULL above).
            Some(unsafe { str_arg(json, "json") }?.to_string())
        };
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.service_config = json;
                Ok(())
            })
        }
    })
}

/// Whether the service config's retry and hedging policies apply (default true).
/// Transparent retries of streams the server never processed happen either way.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_enable_retries(
    options: *mut plexus_channel_options,
    enable: bool,
) -> plexus_result {
    boundary("plexus_channel_options_set_enable_retries", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.enable_retries = enable;
                Ok(())
            })
        }
    })
}

/// Whether the service config's `healthCheckConfig` turns on client-side health checking
/// under round_robin (default true; false is C-core's `grpc.inhibit_health_checking`).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_health_checking(
    options: *mut plexus_channel_options,
    enable: bool,
) -> plexus_result {
    boundary("plexus_channel_options_set_health_checking", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.health_checking = enable;
                Ok(())
            })
        }
    })
}

/// Request bytes one call keeps so that it can be retried (default 256 KiB); a call that
/// sends more commits to its current attempt.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_per_call_retry_buffer_size(
    options: *mut plexus_channel_options,
    bytes: usize,
) -> plexus_result {
    boundary(
        "plexus_channel_options_set_per_call_retry_buffer_size",
        || {
            // SAFETY: the caller passes a live object or NULL (checked).
            unsafe {
                set(options, |o| {
                    o.per_call_retry_buffer_size = bytes;
                    Ok(())
                })
            }
        },
    )
}

/// Request bytes all the channel's calls keep for retries together (default 16 MiB); a call
/// that would go past it commits to its current attempt.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_retry_buffer_size(
    options: *mut plexus_channel_options,
    bytes: usize,
) -> plexus_result {
    boundary("plexus_channel_options_set_retry_buffer_size", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.retry_buffer_size = bytes;
                Ok(())
            })
        }
    })
}

/// Sets functions the channel runs around every call: `start` before it is sent (it may add
/// request metadata, such as an auth token, or refuse the call with a status code), `end` once
/// it has ended (its status code and message, for metrics). Either may be NULL; both NULL
/// remove the hooks. `user_data` is passed to both as is; plexus never dereferences it, and
/// it must stay valid, and safe to use from several threads at once, while any channel made
/// with these options lives. Channels made with equal options and the same hooks and
/// `user_data` may share connections. For credentials that take time to fetch or fail with a
/// message, `plexus_channel_options_set_call_credentials` fits better.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live; `start` and `end` are NULL or functions of the types described.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_call_hooks(
    options: *mut plexus_channel_options,
    start: plexus_call_start_hook,
    end: plexus_call_end_hook,
    user_data: *mut c_void,
) -> plexus_result {
    boundary("plexus_channel_options_set_call_hooks", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        let options = unsafe { plexus_channel_options::as_mut(options) }?;
        options.hooks = (start.is_some() || end.is_some()).then_some(CallHooks {
            start,
            end,
            user_data: user_data as usize,
        });
        Ok(PLEXUS_OK)
    })
}

/// Sets the channel's call credentials: `callback` runs before each call, after the start
/// hook, on a thread of plexus's blocking pool, to add credentials such as
/// `authorization: Bearer <token>` to the call's metadata, or to fail the call with
/// UNAVAILABLE and its error text when it cannot (see `plexus_call_credentials_fn`). A call
/// whose deadline passes first ends with DEADLINE_EXCEEDED at once; the callback still runs
/// to its end, and what it adds is dropped. The metadata is
/// sent whether or not the channel uses TLS: keep tokens to TLS channels.
///
/// Takes ownership of `user_data` even on failure: `release(user_data)` (if `release` is not
/// NULL) runs exactly once, on any thread, when no options object, channel or call needs it
/// any more; at once if `callback` is NULL (which removes the credentials) or on failure.
/// Until then `user_data` must stay valid and safe to use from several threads at once.
/// Setting credentials again replaces them (the old ones are released once unused). Channels
/// made with equal options and the same `callback`, `user_data` and `release` may share
/// connections.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live; `callback` and `release` are NULL or functions of the types described.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_options_set_call_credentials(
    options: *mut plexus_channel_options,
    callback: plexus_call_credentials_fn,
    user_data: *mut c_void,
    release: crate::bytes::plexus_release_fn,
) -> plexus_result {
    boundary("plexus_channel_options_set_call_credentials", || {
        // Owned from here on: released when the last holder drops it, on failure too.
        let credentials = CallCredentials::new(callback, user_data, release);
        // SAFETY: the caller passes a live object or NULL (checked).
        let options = unsafe { plexus_channel_options::as_mut(options) }?;
        options.credentials = credentials;
        Ok(PLEXUS_OK)
    })
}

/// Options for one call: timeout, metadata, size limits, wait-for-ready. Owned by the caller;
/// free with `plexus_call_options_free`. A call copies what it needs when it starts, so the
/// options may be freed or reused right after, and shared by calls on several threads once
/// no thread modifies them.
pub struct plexus_call_options {
    _private: [u8; 0],
}

impl BoxHandle for plexus_call_options {
    type Rust = CallOpts;
    const NAME: &'static str = "options";
}

/// What a `plexus_call_options` holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallOpts {
    timeout: Option<Duration>,
    metadata: core_plexus::Metadata,
    max_recv: Option<usize>,
    max_send: Option<usize>,
    wait_for_ready: bool,
    compression: Option<Compression>,
    /// The server call this call is made for (deadline and cancellation propagate).
    parent: Option<core_plexus::CallContext>,
}

impl CallOpts {
    /// Core's options for a call starting now.
    pub(crate) fn to_core(&self) -> CallOptions {
        let mut options = CallOptions::new()
            .metadata(self.metadata.clone())
            .wait_for_ready(self.wait_for_ready);
        if let Some(timeout) = self.timeout {
            options = options.timeout(timeout);
        }
        if let Some(v) = self.max_recv {
            options = options.max_receive_message_size(v);
        }
        if let Some(v) = self.max_send {
            options = options.max_send_message_size(v);
        }
        if let Some(v) = self.compression {
            options = options.compression(v);
        }
        if let Some(parent) = &self.parent {
            options = options.child_of(parent);
        }
        options
    }
}

/// Core's options from a `plexus_call_options` argument (NULL: defaults).
///
/// # Safety
/// `ptr` is NULL or live.
pub(crate) unsafe fn call_options_arg(ptr: *const plexus_call_options) -> CallOptions {
    if ptr.is_null() {
        return CallOptions::new();
    }
    // SAFETY: per this function's contract, ptr is live.
    match unsafe { plexus_call_options::as_ref(ptr) } {
        Ok(options) => options.to_core(),
        Err(_) => CallOptions::new(),
    }
}

/// Runs `set` on the call options behind `ptr`.
///
/// # Safety
/// `ptr` is NULL or live.
unsafe fn set_call(
    ptr: *mut plexus_call_options,
    set: impl FnOnce(&mut CallOpts) -> Result<()>,
) -> Result<plexus_result> {
    // SAFETY: per this function's contract.
    let options = unsafe { plexus_call_options::as_mut(ptr) }?;
    set(options)?;
    Ok(PLEXUS_OK)
}

/// Creates call options with no timeout, no metadata, the channel's size limits and
/// fail-fast behaviour; owned by the caller (free with `plexus_call_options_free`).
///
/// Returns PLEXUS_OK and writes `*out`; PLEXUS_ERR_NULL_ARGUMENT if `out` is NULL.
///
/// # Safety
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_options_new(
    out: *mut *mut plexus_call_options,
) -> plexus_result {
    boundary("plexus_call_options_new", || {
        crate::handle::check_out(out, "out")?;
        let options = plexus_call_options::into_raw(CallOpts::default());
        // SAFETY: out was checked and is writable.
        unsafe { write_out(out, "out", options) }?;
        Ok(PLEXUS_OK)
    })
}

/// Frees call options. NULL is a no-op.
///
/// # Safety
/// `options` is NULL or live, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_options_free(options: *mut plexus_call_options) {
    boundary("plexus_call_options_free", || {
        // SAFETY: the caller gives up a live object or NULL.
        drop(unsafe { plexus_call_options::take(options) });
        Ok(())
    })
}

/// The call's deadline: `ms` milliseconds after each call using these options starts; sent
/// to the server as `grpc-timeout`, and the call ends with DEADLINE_EXCEEDED when it passes.
/// A negative value removes the deadline (the default).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_options_set_timeout_ms(
    options: *mut plexus_call_options,
    ms: i64,
) -> plexus_result {
    boundary("plexus_call_options_set_timeout_ms", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set_call(options, |o| {
                o.timeout = crate::runtime::timeout_arg(ms);
                Ok(())
            })
        }
    })
}

/// Makes calls with these options calls on behalf of the server call `parent` (NULL clears
/// it): they get its deadline when it is earlier than their own timeout, and are cancelled
/// with CANCELLED when it is cancelled (its client gave up, its deadline passed, its
/// connection went away). The options keep what they need of `parent`, which may be freed.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live; `parent` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_options_set_parent(
    options: *mut plexus_call_options,
    parent: *const crate::server_call::plexus_server_call,
) -> plexus_result {
    boundary("plexus_call_options_set_parent", || {
        let parent = if parent.is_null() {
            None
        } else {
            // SAFETY: parent is live (checked non-NULL).
            Some(
                unsafe { crate::server_call::plexus_server_call::as_ref(parent) }?
                    .context()
                    .clone(),
            )
        };
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set_call(options, |o| {
                o.parent = parent;
                Ok(())
            })
        }
    })
}

/// The request metadata: a copy of `metadata` (NULL clears it). The caller keeps ownership
/// of `metadata`.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live; `metadata` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_options_set_metadata(
    options: *mut plexus_call_options,
    metadata: *const plexus_metadata,
) -> plexus_result {
    boundary("plexus_call_options_set_metadata", || {
        let md = if metadata.is_null() {
            core_plexus::Metadata::new()
        } else {
            // SAFETY: metadata is live (checked non-NULL).
            unsafe { plexus_metadata::as_ref(metadata) }?.core().clone()
        };
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set_call(options, |o| {
                o.metadata = md;
                Ok(())
            })
        }
    })
}

/// Whether the call waits for the channel to become ready (up to its deadline) instead of
/// failing at once with UNAVAILABLE while the channel is in TRANSIENT_FAILURE (default false).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_options_set_wait_for_ready(
    options: *mut plexus_call_options,
    wait: bool,
) -> plexus_result {
    boundary("plexus_call_options_set_wait_for_ready", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set_call(options, |o| {
                o.wait_for_ready = wait;
                Ok(())
            })
        }
    })
}

/// Compresses this call's request messages with `compression` (NUL-terminated:
/// `"identity"`, `"gzip"` or `"deflate"`) instead of the channel's choice.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument;
/// PLEXUS_ERR_INVALID_UTF8; PLEXUS_ERR_INVALID_ARGUMENT for another name.
///
/// # Safety
/// `options` is live; `compression` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_options_set_compression(
    options: *mut plexus_call_options,
    compression: *const c_char,
) -> plexus_result {
    boundary("plexus_call_options_set_compression", || {
        // SAFETY: compression is a C string or NULL (checked).
        let compression = unsafe { compression_arg(compression) }?;
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set_call(options, |o| {
                o.compression = Some(compression);
                Ok(())
            })
        }
    })
}

/// Overrides the channel's largest received message for this call, in bytes.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_options_set_max_receive_message_size(
    options: *mut plexus_call_options,
    bytes: usize,
) -> plexus_result {
    boundary("plexus_call_options_set_max_receive_message_size", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set_call(options, |o| {
                o.max_recv = Some(bytes);
                Ok(())
            })
        }
    })
}

/// Overrides the channel's largest sent message for this call, in bytes.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_options_set_max_send_message_size(
    options: *mut plexus_call_options,
    bytes: usize,
) -> plexus_result {
    boundary("plexus_call_options_set_max_send_message_size", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set_call(options, |o| {
                o.max_send = Some(bytes);
                Ok(())
            })
        }
    })
}

#[cfg(test)]
mod tests {
    /// Every field of core's `ChannelSettings` (and of its `Http2Settings`) has a
    /// `plexus_channel_options_set_*`: adding a setting without a C setter fails.
    #[test]
    fn every_channel_setting_has_a_c_setter() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |path: &str| std::fs::read_to_string(dir.join(path)).unwrap();
        let ours = read("src/options.rs");
        let fields = |source: &str, name: &str| -> Vec<String> {
            let body = &source[source.find(&format!("pub struct {name} {{")).unwrap()..];
            let body = &body[..body.find("\n}\n").unwrap()];
            body.lines()
                .filter_map(|l| l.trim().strip_prefix("pub "))
                .filter_map(|l| l.split_once(':').map(|(field, _)| field.to_string()))
                .filter(|field| !field.contains(' '))
                .collect()
        };
        let mut settings = fields(&read("../core/src/client/settings.rs"), "ChannelSettings");
        settings.retain(|f| f != "http2");
        settings.extend(fields(&read("../core/src/proto/http2.rs"), "Http2Settings"));
        assert!(settings.len() >= 15, "found {settings:?}");
        let missing: Vec<_> = settings
            .iter()
            .filter(|s| {
                let setter = format!("fn plexus_channel_options_set_{s}(");
                let setter_ms = format!("fn plexus_channel_options_set_{s}_ms(");
                !ours.contains(&setter) && !ours.contains(&setter_ms)
            })
            .collect();
        assert!(
            missing.is_empty(),
            "no C setter for ChannelSettings::{missing:?}"
        );
    }
}
