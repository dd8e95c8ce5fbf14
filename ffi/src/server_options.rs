//! Option objects of the server: `plexus_server_options` (one setter per field of core's
//! `ServerSettings`) and `plexus_server_tls` (one listener's TLS).

use std::ffi::c_char;
use std::time::Duration;

use core_plexus::{Certificate, Identity, ServerSettings, ServerTlsConfig};

use crate::boundary::boundary;
use crate::error::{PLEXUS_OK, Result, plexus_result};
use crate::handle::{BoxHandle, check_out, str_arg, write_out};
use crate::options::compression_arg;

/// Settings for `plexus_server_new`: core's `ServerSettings`, one setter per field. Owned by
/// the caller; free with `plexus_server_options_free`. The server copies them, so they may be
/// freed or reused right after. Not thread-safe while being modified.
pub struct plexus_server_options {
    _private: [u8; 0],
}

impl BoxHandle for plexus_server_options {
    type Rust = ServerSettings;
    const NAME: &'static str = "options";
}

/// A millisecond argument where a negative value means "never" (`Duration::MAX`).
fn never_if_negative(ms: i64) -> Duration {
    u64::try_from(ms).map_or(Duration::MAX, Duration::from_millis)
}

/// Runs `set` on the settings behind `ptr`, then core's check of each value; on an error the
/// settings stay as they were.
///
/// # Safety
/// `ptr` is NULL or live.
unsafe fn set(
    ptr: *mut plexus_server_options,
    set: impl FnOnce(&mut ServerSettings) -> Result<()>,
) -> Result<plexus_result> {
    // SAFETY: per this function's contract.
    let options = unsafe { plexus_server_options::as_mut(ptr) }?;
    let mut next = options.clone();
    set(&mut next)?;
    next.check_values()
        .map_err(|s| crate::error::Error::from_setting(&s))?;
    *options = next;
    Ok(PLEXUS_OK)
}

/// Creates server options with every setting at its default, owned by the caller (free with
/// `plexus_server_options_free`).
///
/// Returns PLEXUS_OK and writes `*out`; PLEXUS_ERR_NULL_ARGUMENT if `out` is NULL.
///
/// # Safety
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_new(
    out: *mut *mut plexus_server_options,
) -> plexus_result {
    boundary("plexus_server_options_new", || {
        check_out(out, "out")?;
        let options = plexus_server_options::into_raw(ServerSettings::default());
        // SAFETY: out was checked and is writable.
        unsafe { write_out(out, "out", options) }?;
        Ok(PLEXUS_OK)
    })
}

/// Frees server options. NULL is a no-op.
///
/// # Safety
/// `options` is NULL or live, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_free(options: *mut plexus_server_options) {
    boundary("plexus_server_options_free", || {
        // SAFETY: the caller gives up a live object or NULL.
        drop(unsafe { plexus_server_options::take(options) });
        Ok(())
    })
}

/// Compresses responses with `name` (`"identity"`, the default, `"gzip"` or `"deflate"`) on
/// every call whose client accepts it; a call may choose otherwise with
/// `plexus_server_call_set_compression`. Compressed requests are inflated whatever this says.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_INVALID_UTF8;
/// PLEXUS_ERR_INVALID_ARGUMENT for another name.
///
/// # Safety
/// `options` is live; `name` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_compression(
    options: *mut plexus_server_options,
    name: *const c_char,
) -> plexus_result {
    boundary("plexus_server_options_set_compression", || {
        // SAFETY: the caller passes a NUL-terminated string or NULL (checked).
        let compression = unsafe { compression_arg(name) }?;
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.response_compression = compression;
                Ok(())
            })
        }
    })
}

/// Calls open at once over the whole server, every connection together (0, the default: no limit). A call beyond it is answered RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!" (grpcio's words for its `maximum_concurrent_rpcs`) and never reaches the host.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_max_concurrent_calls(
    options: *mut plexus_server_options,
    calls: u32,
) -> plexus_result {
    boundary("plexus_server_options_set_max_concurrent_calls", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.max_concurrent_calls = (calls > 0).then_some(calls);
                Ok(())
            })
        }
    })
}

/// SETTINGS_MAX_CONCURRENT_STREAMS: calls open at once on one connection (default 100).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_max_concurrent_streams(
    options: *mut plexus_server_options,
    streams: u32,
) -> plexus_result {
    boundary("plexus_server_options_set_max_concurrent_streams", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.max_concurrent_streams = streams;
                Ok(())
            })
        }
    })
}

/// Largest request message accepted, in bytes (default 4 MiB); a bigger one ends its call with RESOURCE_EXHAUSTED.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_max_receive_message_size(
    options: *mut plexus_server_options,
    bytes: usize,
) -> plexus_result {
    boundary("plexus_server_options_set_max_receive_message_size", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.max_receive_message_size = bytes;
                Ok(())
            })
        }
    })
}

/// Largest response message sent, in bytes (default unlimited); a bigger one ends its call with RESOURCE_EXHAUSTED.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_max_send_message_size(
    options: *mut plexus_server_options,
    bytes: usize,
) -> plexus_result {
    boundary("plexus_server_options_set_max_send_message_size", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.max_send_message_size = bytes;
                Ok(())
            })
        }
    })
}

/// Initial HTTP/2 stream window; setting it pins the windows instead of adapting them to the measured bandwidth-delay product.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_initial_stream_window_size(
    options: *mut plexus_server_options,
    bytes: u32,
) -> plexus_result {
    boundary(
        "plexus_server_options_set_initial_stream_window_size",
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

/// Initial HTTP/2 connection window; setting it pins the windows.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_initial_connection_window_size(
    options: *mut plexus_server_options,
    bytes: u32,
) -> plexus_result {
    boundary(
        "plexus_server_options_set_initial_connection_window_size",
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

/// Whether flow-control windows follow the measured bandwidth-delay product (default: yes unless a window size is set).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_adaptive_window(
    options: *mut plexus_server_options,
    adaptive: bool,
) -> plexus_result {
    boundary("plexus_server_options_set_adaptive_window", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.http2.adaptive_window = Some(adaptive);
                Ok(())
            })
        }
    })
}

/// Largest HTTP/2 frame accepted (default 16384; 16384 to 16777215).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_max_frame_size(
    options: *mut plexus_server_options,
    bytes: u32,
) -> plexus_result {
    boundary("plexus_server_options_set_max_frame_size", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.http2.max_frame_size = bytes;
                Ok(())
            })
        }
    })
}

/// Sends a keepalive PING after this many milliseconds without a frame from a client (default 2 hours; negative: never).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_keepalive_time_ms(
    options: *mut plexus_server_options,
    ms: i64,
) -> plexus_result {
    boundary("plexus_server_options_set_keepalive_time_ms", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.keepalive_time = never_if_negative(ms);
                Ok(())
            })
        }
    })
}

/// Closes a connection whose keepalive PING is unanswered for this many milliseconds (default 20000; above 0).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_keepalive_timeout_ms(
    options: *mut plexus_server_options,
    ms: i64,
) -> plexus_result {
    boundary("plexus_server_options_set_keepalive_timeout_ms", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.keepalive_timeout = never_if_negative(ms);
                Ok(())
            })
        }
    })
}

/// Shortest interval, in milliseconds, allowed between a client's PINGs while calls are open (default 5 minutes); a client pinging faster is sent GOAWAY ENHANCE_YOUR_CALM.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_keepalive_min_ping_interval_ms(
    options: *mut plexus_server_options,
    ms: i64,
) -> plexus_result {
    boundary(
        "plexus_server_options_set_keepalive_min_ping_interval_ms",
        || {
            // SAFETY: the caller passes a live object or NULL (checked).
            unsafe {
                set(options, |o| {
                    o.keepalive_min_ping_interval = never_if_negative(ms);
                    Ok(())
                })
            }
        },
    )
}

/// Whether clients may ping at that interval while no call is open (default false).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_keepalive_permit_without_calls(
    options: *mut plexus_server_options,
    permit: bool,
) -> plexus_result {
    boundary(
        "plexus_server_options_set_keepalive_permit_without_calls",
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

/// Time a new connection has to finish its TLS handshake and HTTP/2 preface, in milliseconds (default 20000; negative: no limit).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_handshake_timeout_ms(
    options: *mut plexus_server_options,
    ms: i64,
) -> plexus_result {
    boundary("plexus_server_options_set_handshake_timeout_ms", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.handshake_timeout = never_if_negative(ms);
                Ok(())
            })
        }
    })
}

/// Largest request header block accepted, metadata included (default 16384).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_max_header_list_size(
    options: *mut plexus_server_options,
    bytes: u32,
) -> plexus_result {
    boundary("plexus_server_options_set_max_header_list_size", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.max_header_list_size = bytes;
                Ok(())
            })
        }
    })
}

/// Sends GOAWAY to, and closes, a connection with no call for this many milliseconds (gRFC A9; default and negative: never).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_max_connection_idle_ms(
    options: *mut plexus_server_options,
    ms: i64,
) -> plexus_result {
    boundary("plexus_server_options_set_max_connection_idle_ms", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.max_connection_idle = never_if_negative(ms);
                Ok(())
            })
        }
    })
}

/// Sends GOAWAY to a connection this many milliseconds old, ±10 % (gRFC A9; default and negative: never): its clients reconnect and re-resolve, which spreads them over new servers.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_max_connection_age_ms(
    options: *mut plexus_server_options,
    ms: i64,
) -> plexus_result {
    boundary("plexus_server_options_set_max_connection_age_ms", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        unsafe {
            set(options, |o| {
                o.max_connection_age = never_if_negative(ms);
                Ok(())
            })
        }
    })
}

/// How long calls in flight have after an age GOAWAY before the connection closes under them, in milliseconds (default and negative: as long as they take).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT if `options` is NULL; PLEXUS_ERR_INVALID_ARGUMENT for a value out of range.
///
/// # Safety
/// `options` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_options_set_max_connection_age_grace_ms(
    options: *mut plexus_server_options,
    ms: i64,
) -> plexus_result {
    boundary(
        "plexus_server_options_set_max_connection_age_grace_ms",
        || {
            // SAFETY: the caller passes a live object or NULL (checked).
            unsafe {
                set(options, |o| {
                    o.max_connection_age_grace = never_if_negative(ms);
                    Ok(())
                })
            }
        },
    )
}

/// TLS for one listener (`plexus_server_add_listener`): the server's certificate chain and
/// key, and optionally the roots that client certificates must chain to. Owned by the caller;
/// free with `plexus_server_tls_free`; a listener copies it. Not thread-safe while being
/// modified.
pub struct plexus_server_tls {
    _private: [u8; 0],
}

impl BoxHandle for plexus_server_tls {
    type Rust = ServerTlsConfig;
    const NAME: &'static str = "tls";
}

/// Creates TLS settings presenting `cert_chain_pem` (the server's certificate first, then
/// intermediates) with `private_key_pem` (PKCS#8, PKCS#1 or SEC1), both copied. Only HTTP/2 is
/// offered over ALPN. The PEMs are parsed when a listener is added, which names what is
/// wrong with them.
///
/// Returns PLEXUS_OK and writes `*out` (caller owns it); PLEXUS_ERR_NULL_ARGUMENT;
/// PLEXUS_ERR_INVALID_UTF8.
///
/// # Safety
/// `cert_chain_pem` and `private_key_pem` are NUL-terminated strings; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_tls_new(
    cert_chain_pem: *const c_char,
    private_key_pem: *const c_char,
    out: *mut *mut plexus_server_tls,
) -> plexus_result {
    boundary("plexus_server_tls_new", || {
        // SAFETY: the caller passes NUL-terminated strings or NULL (checked).
        let cert = unsafe { str_arg(cert_chain_pem, "cert_chain_pem") }?;
        // SAFETY: as above.
        let key = unsafe { str_arg(private_key_pem, "private_key_pem") }?;
        check_out(out, "out")?;
        let tls = ServerTlsConfig::new(Identity::from_pem(cert, key));
        // SAFETY: out was checked and is writable.
        unsafe { write_out(out, "out", plexus_server_tls::into_raw(tls)) }?;
        Ok(PLEXUS_OK)
    })
}

/// Asks clients for a certificate that chains to the roots in `ca_pem` (copied; one or more
/// PEM certificates; calling again adds more). With `require_client_cert` a client without
/// one fails the handshake; without it such clients are let in (and a handler sees no
/// certificate).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_INVALID_UTF8.
///
/// # Safety
/// `tls` is live; `ca_pem` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_tls_set_client_ca_pem(
    tls: *mut plexus_server_tls,
    ca_pem: *const c_char,
    require_client_cert: bool,
) -> plexus_result {
    boundary("plexus_server_tls_set_client_ca_pem", || {
        // SAFETY: the caller passes a NUL-terminated string or NULL (checked).
        let pem = unsafe { str_arg(ca_pem, "ca_pem") }?;
        // SAFETY: the caller passes a live object or NULL (checked).
        let config = unsafe { plexus_server_tls::as_mut(tls) }?;
        let next = config
            .clone()
            .client_ca_certificate(Certificate::from_pem(pem))
            .client_auth_optional(!require_client_cert);
        *config = next;
        Ok(PLEXUS_OK)
    })
}

/// Frees TLS settings. NULL is a no-op.
///
/// # Safety
/// `tls` is NULL or live, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_tls_free(tls: *mut plexus_server_tls) {
    boundary("plexus_server_tls_free", || {
        // SAFETY: the caller gives up a live object or NULL.
        drop(unsafe { plexus_server_tls::take(tls) });
        Ok(())
    })
}
