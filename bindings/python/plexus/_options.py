"""Channel options: plexus's own keywords and grpcio's `options=[("grpc.x", value), ...]`.

Both end up as one dict of plexus settings (keywords win over `grpc.*` keys), applied to a
plexus_channel_options handle. Durations are seconds (float) in the keywords, as grpcio's
`timeout=` is; the `grpc.*_ms` keys are milliseconds, as in grpcio.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ctypes import byref, c_void_p
from typing import Any, Callable, Optional, Tuple

from . import _ffi
from ._common import compression_name

_INT_MAX = 2**31 - 1  # grpc's "disabled" value for keepalive time and idle timeout
_SIZE_MAX = 2**64 - 1

#: plexus keyword options and what they take.
KEYWORDS = {
    "shared": "bool: share connections with equal channels to the same target (default True)",
    "max_receive_message_size": "int bytes, or None for unlimited (default 4 MiB)",
    "max_send_message_size": "int bytes, or None for unlimited (the default)",
    "initial_stream_window_size": "int bytes: pins HTTP/2 flow-control windows",
    "initial_connection_window_size": "int bytes: pins HTTP/2 flow-control windows",
    "adaptive_window": "bool: BDP-based flow-control windows (default on)",
    "keepalive_time": "seconds between keepalive PINGs on an idle connection; 0 = off",
    "keepalive_timeout": "seconds a keepalive PING may stay unanswered (default 20)",
    "keepalive_permit_without_calls": "bool: keepalive PINGs while no call is open",
    "max_frame_size": "int bytes: largest HTTP/2 frame accepted (16384..16777215)",
    "connect_timeout": "seconds allowed to establish a connection (default 20)",
    "multiple_connections": "bool: open more connections at MAX_CONCURRENT_STREAMS",
    "max_connections_per_endpoint": "int: cap on connections per endpoint (default 16)",
    "backoff_initial": "seconds: first reconnect backoff (default 1)",
    "backoff_multiplier": "float: backoff growth factor (default 1.6)",
    "backoff_jitter": "float in [0, 1): backoff jitter (default 0.2)",
    "backoff_max": "seconds: largest reconnect backoff (default 120)",
    "idle_timeout": "seconds without calls before connections close (default 1800)",
    "resolve_interval": "seconds between re-resolutions of the target while in use (default 30)",
    "min_resolve_interval": "seconds: least time between re-resolutions on failure or GOAWAY",
    "lb_policy": '"pick_first" (default) or "round_robin"',
    "user_agent": "str: prefix of the user-agent header",
    "compression": 'grpc.Compression value or "gzip"/"deflate"/"identity": request messages',
    "service_config": "str: gRPC service config JSON (per-method timeouts, retries, hedging)",
    "enable_retries": "bool: apply the service config's retry/hedging policies (default True)",
    "health_checking": "bool: the service config's healthCheckConfig applies (default True)",
    "authority": "str host[:port]: every call's :authority (and TLS name unless overridden)",
    "per_call_retry_buffer_size": "int bytes one call keeps for retries (default 256 KiB)",
    "retry_buffer_size": "int bytes all calls keep for retries together (default 16 MiB)",
}

_BACKOFF_DEFAULTS = {
    "backoff_initial": 1.0,
    "backoff_multiplier": 1.6,
    "backoff_jitter": 0.2,
    "backoff_max": 120.0,
}


def _int(key: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"channel option {key!r} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"channel option {key!r} must be at least {minimum}, not {value}")
    return value


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError(f"channel option {key!r} must be a bool (or 0/1), not {value!r}")


def _str(key: str, value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise TypeError(f"channel option {key!r} must be a str, not {type(value).__name__}")
    return value


def _seconds(key: str, value: Any, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"channel option {key!r} must be seconds, not {type(value).__name__}")
    if value != value or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"channel option {key!r} must be a positive number of seconds, not {value}"
        )
    return float(value)


def _ms(key: str, value: Any) -> float:
    """A grpc.*_ms value as seconds."""
    return _int(key, value) / 1000.0


def _grpc_unlimited_size(key: str, value: Any) -> int | None:
    value = _int(key, value, minimum=-1)
    return None if value == -1 else value


def _grpc_keepalive_time(key: str, value: Any) -> float:
    ms = _int(key, value)
    return 0.0 if ms >= _INT_MAX else ms / 1000.0


def _grpc_idle(key: str, value: Any) -> float | None:
    ms = _int(key, value)
    if ms == 0 or ms >= _INT_MAX:
        return None  # grpc: 0 or INT_MAX disables the idle timeout; plexus's cap is large
    return ms / 1000.0


def _ignored_int(key: str, value: Any) -> object:
    _int(key, value)
    return _IGNORE


_IGNORE = object()

ChannelOptions = Iterable[Tuple[str, Any]]
"""grpcio's channel arguments: `[("grpc.keepalive_time_ms", 10000), ...]`."""

_Converter = Callable[[str, Any], Any]

#: grpcio channel arguments plexus understands: key -> (plexus setting, converter).
GRPC_KEYS: dict[str, Tuple[Optional[str], _Converter]] = {
    "grpc.keepalive_time_ms": ("keepalive_time", _grpc_keepalive_time),
    "grpc.keepalive_timeout_ms": ("keepalive_timeout", _ms),
    "grpc.keepalive_permit_without_calls": ("keepalive_permit_without_calls", _bool),
    "grpc.max_send_message_length": ("max_send_message_size", _grpc_unlimited_size),
    "grpc.max_receive_message_length": ("max_receive_message_size", _grpc_unlimited_size),
    "grpc.lb_policy_name": ("lb_policy", _str),
    "grpc.primary_user_agent": ("user_agent", _str),
    "grpc.initial_reconnect_backoff_ms": ("backoff_initial", _ms),
    "grpc.max_reconnect_backoff_ms": ("backoff_max", _ms),
    # gRPC's connection-backoff spec calls it MIN_CONNECT_TIMEOUT.
    "grpc.min_reconnect_backoff_ms": ("connect_timeout", _ms),
    "grpc.client_idle_timeout_ms": ("idle_timeout", _grpc_idle),
    "grpc.dns_min_time_between_resolutions_ms": ("min_resolve_interval", _ms),
    "grpc.http2.max_frame_size": ("max_frame_size", _int),
    "grpc.http2.lookahead_bytes": ("initial_stream_window_size", _int),
    "grpc.use_local_subchannel_pool": ("shared", lambda k, v: not _bool(k, v)),
    # A server setting in grpcio (ignored by grpcio's client channels too): plexus follows
    # the server's SETTINGS_MAX_CONCURRENT_STREAMS and opens more connections past it.
    "grpc.default_compression_algorithm": ("compression", _int),
    "grpc.max_concurrent_streams": (None, _ignored_int),
    "grpc.enable_retries": ("enable_retries", _bool),
    "grpc.inhibit_health_checking": ("health_checking", lambda k, v: not _bool(k, v)),
    "grpc.default_authority": ("authority", _str),
    "grpc.service_config": ("service_config", _str),
    "grpc.per_rpc_retry_buffer_size": ("per_call_retry_buffer_size", _int),
}


def collect(options: ChannelOptions | None, keywords: Mapping[str, Any]) -> dict[str, Any]:
    """Validates grpcio-style `options` and plexus `keywords` into one settings dict."""
    settings: dict[str, Any] = {}
    if options is not None:
        if isinstance(options, (str, bytes, dict)):
            raise TypeError("options must be a sequence of (key, value) pairs")
        try:
            items = list(options)
        except TypeError:
            raise TypeError("options must be a sequence of (key, value) pairs") from None
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(f"each channel option must be a (key, value) pair, not {item!r}")
            key, value = item
            if isinstance(key, bytes):
                key = key.decode("utf-8")
            if not isinstance(key, str):
                raise TypeError(f"channel option keys must be str, not {type(key).__name__}")
            # grpcio accepts only these value types for any channel argument.
            if not isinstance(value, (int, str, bytes)):
                raise TypeError(
                    f"channel option {key!r}: value must be an int, str or bytes, "
                    f"not {type(value).__name__}"
                )
            known = GRPC_KEYS.get(key)
            if known is None:
                continue  # as grpcio: channel arguments nobody reads are ignored
            name, convert = known
            converted = convert(key, value)
            if name is not None and converted is not _IGNORE:
                settings[name] = converted
    for name, value in keywords.items():
        if name not in KEYWORDS:
            raise TypeError(
                f"unknown channel option {name!r}; plexus options are: {', '.join(KEYWORDS)}"
            )
        if value is not None or name in ("max_receive_message_size", "max_send_message_size"):
            settings[name] = value
    return settings


def build(lib: _ffi.Lib, settings: Mapping[str, Any]) -> int:
    """A plexus_channel_options handle holding `settings`; the caller frees it."""
    out = c_void_p()
    lib.check(lib.channel_options_new(byref(out)))
    handle = _ffi.handle(out)
    try:
        _apply(lib, handle, settings)
    except BaseException:
        lib.channel_options_free(handle)
        raise
    return handle


def _apply(lib: _ffi.Lib, h: int, s: Mapping[str, Any]) -> None:
    def check(rc: int, name: str) -> None:
        if rc:
            raise lib.error(rc, f"channel option {name}={s.get(name)!r}")

    def ms(name: str, allow_zero: bool = False) -> int:
        return round(_seconds(name, s[name], allow_zero) * 1000)

    if "shared" in s:
        check(lib.channel_options_set_shared(h, _bool("shared", s["shared"])), "shared")
    for name, setter in (
        ("max_receive_message_size", lib.channel_options_set_max_receive_message_size),
        ("max_send_message_size", lib.channel_options_set_max_send_message_size),
    ):
        if name in s:
            value = s[name]
            size = _SIZE_MAX if value is None else _int(name, value)
            check(setter(h, min(size, _SIZE_MAX)), name)
    for name, setter in (
        ("initial_stream_window_size", lib.channel_options_set_initial_stream_window_size),
        (
            "initial_connection_window_size",
            lib.channel_options_set_initial_connection_window_size,
        ),
        ("max_frame_size", lib.channel_options_set_max_frame_size),
    ):
        if name in s:
            value = _int(name, s[name], minimum=1)
            if value > 2**32 - 1:
                raise ValueError(f"channel option {name!r} is out of range: {value}")
            check(setter(h, value), name)
    if "adaptive_window" in s:
        check(
            lib.channel_options_set_adaptive_window(
                h, _bool("adaptive_window", s["adaptive_window"])
            ),
            "adaptive_window",
        )
    if "keepalive_time" in s:
        check(
            lib.channel_options_set_keepalive_time_ms(h, ms("keepalive_time", True)),
            "keepalive_time",
        )
    if "keepalive_timeout" in s:
        check(
            lib.channel_options_set_keepalive_timeout_ms(h, ms("keepalive_timeout")),
            "keepalive_timeout",
        )
    if "keepalive_permit_without_calls" in s:
        value = _bool("keepalive_permit_without_calls", s["keepalive_permit_without_calls"])
        check(
            lib.channel_options_set_keepalive_permit_without_calls(h, value),
            "keepalive_permit_without_calls",
        )
    if "connect_timeout" in s:
        check(
            lib.channel_options_set_connect_timeout_ms(h, ms("connect_timeout")), "connect_timeout"
        )
    if "multiple_connections" in s:
        value = _bool("multiple_connections", s["multiple_connections"])
        check(lib.channel_options_set_multiple_connections(h, value), "multiple_connections")
    if "max_connections_per_endpoint" in s:
        value = _int("max_connections_per_endpoint", s["max_connections_per_endpoint"], 1)
        check(
            lib.channel_options_set_max_connections_per_endpoint(h, value),
            "max_connections_per_endpoint",
        )
    if any(name in s for name in _BACKOFF_DEFAULTS):
        b = {**_BACKOFF_DEFAULTS, **{k: s[k] for k in _BACKOFF_DEFAULTS if k in s}}
        initial = _seconds("backoff_initial", b["backoff_initial"], allow_zero=False)
        maximum = _seconds("backoff_max", b["backoff_max"], allow_zero=False)
        if "backoff_max" not in s and maximum < initial:
            maximum = initial
        if "backoff_initial" not in s and initial > maximum:
            initial = maximum
        for name in ("backoff_multiplier", "backoff_jitter"):
            value = b[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"channel option {name!r} must be a number, not {value!r}")
        rc = lib.channel_options_set_backoff(
            h,
            max(1, round(initial * 1000)),
            float(b["backoff_multiplier"]),
            float(b["backoff_jitter"]),
            max(1, round(maximum * 1000)),
        )
        if rc:
            raise lib.error(rc, f"reconnect backoff {b}")
    if "idle_timeout" in s:
        if s["idle_timeout"] is not None:
            check(lib.channel_options_set_idle_timeout_ms(h, ms("idle_timeout")), "idle_timeout")
    for name, setter in (
        ("resolve_interval", lib.channel_options_set_resolve_interval_ms),
        ("min_resolve_interval", lib.channel_options_set_min_resolve_interval_ms),
    ):
        if name in s:
            check(setter(h, ms(name)), name)
    if "lb_policy" in s:
        policy = _str("lb_policy", s["lb_policy"])
        if "\0" in policy:
            raise ValueError("channel option 'lb_policy' contains a NUL character")
        check(lib.channel_options_set_lb_policy(h, policy.encode("utf-8")), "lb_policy")
    if s.get("compression") is not None:
        check(
            lib.channel_options_set_compression(h, compression_name(s["compression"])),
            "compression",
        )
    if "service_config" in s:
        config = _str("service_config", s["service_config"])
        if "\0" in config:
            raise ValueError("channel option 'service_config' contains a NUL character")
        check(lib.channel_options_set_service_config(h, config.encode("utf-8")), "service_config")
    if "enable_retries" in s:
        value = _bool("enable_retries", s["enable_retries"])
        check(lib.channel_options_set_enable_retries(h, value), "enable_retries")
    if "health_checking" in s:
        value = _bool("health_checking", s["health_checking"])
        check(lib.channel_options_set_health_checking(h, value), "health_checking")
    for name, setter in (
        ("per_call_retry_buffer_size", lib.channel_options_set_per_call_retry_buffer_size),
        ("retry_buffer_size", lib.channel_options_set_retry_buffer_size),
    ):
        if name in s:
            check(setter(h, min(_int(name, s[name]), _SIZE_MAX)), name)
    if "authority" in s:
        authority = _str("authority", s["authority"])
        if "\0" in authority:
            raise ValueError("channel option 'authority' contains a NUL character")
        check(lib.channel_options_set_authority(h, authority.encode("utf-8")), "authority")
    if "user_agent" in s:
        agent = _str("user_agent", s["user_agent"])
        if "\0" in agent:
            raise ValueError("channel option 'user_agent' contains a NUL character")
        check(lib.channel_options_set_user_agent(h, agent.encode("utf-8")), "user_agent")
