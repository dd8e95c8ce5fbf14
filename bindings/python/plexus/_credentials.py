"""TLS channel credentials and call credentials, shaped like grpcio's.

`ssl_channel_credentials`, `access_token_call_credentials`, `metadata_call_credentials`,
`composite_call_credentials` and `composite_channel_credentials` take grpcio's arguments and
work without grpcio. Where a channel or call takes credentials, grpcio's own objects work
too: grpcio exposes no public reader for them, so their contents are read from the
attributes its Cython wrappers keep readable (`_pem_root_certificates`, `_metadata_plugin`,
`_call_credentialses`, ...); a grpcio whose objects lack them is refused with a clear error.

A metadata plugin runs as grpcio runs it: `plugin(context, callback)` with
`context.service_url` and `context.method_name`, and `callback(metadata, error)`; an error
or an exception fails the call with UNAVAILABLE "Getting metadata from plugin failed with
error: ...". Blocking calls run plugins on the calling thread, asyncio calls on a worker
thread, never on the event loop.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

from . import _ffi
from ._common import MetadataArg, Status, StatusCode

_LOG = logging.getLogger("plexus")

PLUGIN_FAILED = "Getting metadata from plugin failed with error: "
"""grpcio's status message for a metadata plugin that failed, before the error's text."""

INSECURE_CALL_CREDENTIALS = (
    "Established channel does not have a sufficient security level to transfer call "
    "credential."
)
"""grpcio's status message (UNAUTHENTICATED) for call credentials on an insecure channel."""

ROOTS_ENV = "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"
"""grpcio's variable naming a PEM file of roots to trust when none are given."""

Pem = Union[bytes, bytearray, str]
"""PEM text as grpcio takes it (bytes; str is accepted too)."""

_Metadata = Tuple[Tuple[str, Union[str, bytes]], ...]


class AuthMetadataContext(NamedTuple):
    """What a metadata plugin is told about the call (grpc.AuthMetadataContext's fields)."""

    service_url: str
    method_name: str


class _Plugin(NamedTuple):
    """One call credential: a grpcio-style plugin, or fixed metadata (an access token)."""

    plugin: Optional[Callable[[Any, Callable[..., None]], object]]
    name: str
    fixed: Optional[_Metadata]


class CallCredentials:
    """Call credentials (grpc.CallCredentials' counterpart): metadata plugins and access
    tokens run, in order, before each call. Make them with `metadata_call_credentials`,
    `access_token_call_credentials` or `composite_call_credentials`."""

    __slots__ = ("_plugins",)

    def __init__(self, plugins: tuple[_Plugin, ...]) -> None:
        self._plugins = plugins

    def __repr__(self) -> str:
        return f"plexus.CallCredentials({', '.join(p.name for p in self._plugins)})"


class ChannelCredentials:
    """TLS channel credentials (grpc.ChannelCredentials' counterpart): the roots to trust,
    an optional client certificate and the call credentials composed into them. Make them
    with `ssl_channel_credentials` or `composite_channel_credentials`."""

    __slots__ = ("_root_certificates", "_private_key", "_certificate_chain", "_plugins")

    def __init__(
        self,
        root_certificates: bytes | None,
        private_key: bytes | None,
        certificate_chain: bytes | None,
        plugins: tuple[_Plugin, ...] = (),
    ) -> None:
        self._root_certificates = root_certificates
        self._private_key = private_key
        self._certificate_chain = certificate_chain
        self._plugins = plugins

    def __repr__(self) -> str:
        parts = ["roots" if self._root_certificates else "default roots"]
        if self._private_key is not None:
            parts.append("client certificate")
        parts.extend(p.name for p in self._plugins)
        return f"plexus.ChannelCredentials({', '.join(parts)})"


def _pem(what: str, value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{what} must be PEM bytes or None, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} is empty")
    return bytes(value)


def ssl_channel_credentials(
    root_certificates: Pem | None = None,
    private_key: Pem | None = None,
    certificate_chain: Pem | None = None,
) -> ChannelCredentials:
    """TLS credentials, as grpc.ssl_channel_credentials: PEM roots to trust (None: the
    file named by $GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, else the system's roots) and, for
    mutual TLS, the client's PEM private key and certificate chain."""
    roots = _pem("root_certificates", root_certificates)
    key = _pem("private_key", private_key)
    chain = _pem("certificate_chain", certificate_chain)
    if (key is None) != (chain is None):
        raise ValueError(
            "private_key and certificate_chain go together: give both for a client "
            "certificate, or neither"
        )
    return ChannelCredentials(roots, key, chain)


def metadata_call_credentials(
    metadata_plugin: Callable[[Any, Callable[..., None]], object], name: str | None = None
) -> CallCredentials:
    """Call credentials from a grpc.AuthMetadataPlugin, as grpc.metadata_call_credentials:
    `metadata_plugin(context, callback)` gives each call's metadata by calling
    `callback(metadata, None)`, or fails it with `callback(None, error)`."""
    if not callable(metadata_plugin):
        raise TypeError(
            f"metadata_plugin must be callable as plugin(context, callback), "
            f"not {type(metadata_plugin).__name__}"
        )
    if name is None:
        name = getattr(metadata_plugin, "__name__", type(metadata_plugin).__name__)
    return CallCredentials((_Plugin(metadata_plugin, str(name), None),))


def _token_plugin(access_token: object) -> _Plugin:
    if isinstance(access_token, bytes):
        access_token = access_token.decode("ascii")
    if not isinstance(access_token, str):
        raise TypeError(f"access_token must be a str, not {type(access_token).__name__}")
    fixed = (("authorization", f"Bearer {access_token}"),)
    return _Plugin(None, "AccessTokenAuthMetadataPlugin", fixed)


def access_token_call_credentials(access_token: str) -> CallCredentials:
    """Call credentials sending `authorization: Bearer <access_token>` with each call, as
    grpc.access_token_call_credentials."""
    return CallCredentials((_token_plugin(access_token),))


def composite_call_credentials(*call_credentials: object) -> CallCredentials:
    """Call credentials applying each of `call_credentials` in order, as
    grpc.composite_call_credentials (plexus's or grpcio's objects)."""
    if not call_credentials:
        raise ValueError("composite_call_credentials needs at least one CallCredentials")
    plugins: tuple[_Plugin, ...] = ()
    for item in call_credentials:
        plugins += call_plugins(item)
    return CallCredentials(plugins)


def composite_channel_credentials(
    channel_credentials: object, *call_credentials: object
) -> ChannelCredentials:
    """TLS credentials whose call credentials run on every call of the channel, as
    grpc.composite_channel_credentials (plexus's or grpcio's objects)."""
    base = as_channel_credentials(channel_credentials)
    plugins = base._plugins
    for item in call_credentials:
        plugins += call_plugins(item)
    return ChannelCredentials(
        base._root_certificates, base._private_key, base._certificate_chain, plugins
    )


# --------------------------------------------------------------------------- grpcio's objects


def _unreadable(obj: object, what: str) -> TypeError:
    return TypeError(
        f"cannot read {what} from {obj!r}: this grpcio keeps them where plexus does not "
        "look; use plexus.ssl_channel_credentials and plexus's call credentials instead"
    )


def _grpcio_call_plugins(inner: object) -> tuple[_Plugin, ...]:
    """The plugins of a cygrpc call-credentials object (what grpc.CallCredentials holds)."""
    kind = type(inner).__name__
    if kind == "CompositeCallCredentials":
        parts = getattr(inner, "_call_credentialses", None)
        if not isinstance(parts, tuple):
            raise _unreadable(inner, "the composed call credentials")
        out: tuple[_Plugin, ...] = ()
        for part in parts:
            out += _grpcio_call_plugins(part)
        return out
    if kind == "MetadataPluginCallCredentials":
        wrapper = getattr(inner, "_metadata_plugin", None)
        plugin = getattr(wrapper, "_metadata_plugin", None)
        if plugin is None or not callable(plugin):
            raise _unreadable(inner, "the metadata plugin")
        raw_name = getattr(inner, "_name", b"")
        name = raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) else str(raw_name)
        token = getattr(plugin, "_access_token", None)
        if type(plugin).__name__ == "AccessTokenAuthMetadataPlugin" and isinstance(token, str):
            return (_token_plugin(token),)
        return (_Plugin(plugin, name, None),)
    raise TypeError(f"plexus does not support grpcio's {kind} call credentials")


def call_plugins(credentials: object) -> tuple[_Plugin, ...]:
    """The plugins of call credentials: plexus's CallCredentials or grpc.CallCredentials."""
    if isinstance(credentials, CallCredentials):
        return credentials._plugins
    inner = getattr(credentials, "_credentials", None)
    if inner is not None and type(credentials).__name__ == "CallCredentials":
        return _grpcio_call_plugins(inner)
    raise ValueError(
        "credentials must be call credentials (plexus.access_token_call_credentials, "
        "plexus.metadata_call_credentials, plexus.composite_call_credentials or grpcio's), "
        f"not {type(credentials).__name__}; they need a secure channel (plexus.secure_channel)"
    )


def _grpcio_channel_credentials(inner: object) -> ChannelCredentials:
    kind = type(inner).__name__
    if kind == "CompositeChannelCredentials":
        base = getattr(inner, "_channel_credentials", None)
        parts = getattr(inner, "_call_credentialses", None)
        if base is None or not isinstance(parts, tuple):
            raise _unreadable(inner, "the composed credentials")
        creds = _grpcio_channel_credentials(base)
        plugins = creds._plugins
        for part in parts:
            plugins += _grpcio_call_plugins(part)
        creds._plugins = plugins
        return creds
    if kind == "SSLChannelCredentials":
        try:
            roots = inner._pem_root_certificates  # type: ignore[attr-defined]
            key = inner._private_key  # type: ignore[attr-defined]
            chain = inner._certificate_chain  # type: ignore[attr-defined]
        except AttributeError:
            raise _unreadable(inner, "the certificates") from None
        if getattr(inner, "_private_key_signer", None) is not None:
            raise TypeError("plexus does not support grpcio's private key signers")
        return ChannelCredentials(
            _pem("root_certificates", roots),
            _pem("private_key", key),
            _pem("certificate_chain", chain),
        )
    if kind == "InsecureChannelCredentials":
        raise ValueError(
            "secure_channel cannot be called with insecure credentials. "
            "Call insecure_channel instead."
        )
    raise TypeError(
        f"plexus supports TLS channel credentials (ssl_channel_credentials, optionally "
        f"composed with call credentials), not grpcio's {kind}"
    )


def as_channel_credentials(credentials: object) -> ChannelCredentials:
    """plexus's ChannelCredentials for plexus's or grpcio's (grpc.ChannelCredentials)."""
    if isinstance(credentials, ChannelCredentials):
        return credentials
    inner = getattr(credentials, "_credentials", None)
    if inner is not None and type(credentials).__name__ == "ChannelCredentials":
        return _grpcio_channel_credentials(inner)
    raise TypeError(
        "credentials must be channel credentials (plexus.ssl_channel_credentials, "
        "plexus.composite_channel_credentials or grpcio's), "
        f"not {type(credentials).__name__}"
    )


# --------------------------------------------------------------------------- channels


class ChannelAuth:
    """What a channel knows to authorize its calls: whether it is secure, its own call
    credentials and the authority that service URLs name."""

    __slots__ = ("secure", "plugins", "authority")

    def __init__(self, secure: bool, plugins: tuple[_Plugin, ...], authority: str) -> None:
        self.secure = secure
        self.plugins = plugins
        self.authority = authority


TLS_NAME_KEY = "grpc.ssl_target_name_override"
AUTHORITY_KEY = "grpc.default_authority"


def _option(options: Any, key: str) -> str | None:
    """The last value of `key` among grpcio-style options (None if absent)."""
    found = None
    if options is None or isinstance(options, (str, bytes, dict)):
        return None
    try:
        items = list(options)
    except TypeError:
        return None
    for item in items:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            name, value = item
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            if name == key:
                if isinstance(value, bytes):
                    value = value.decode("utf-8")
                if not isinstance(value, str) or not value or "\0" in value:
                    raise ValueError(f"channel option {key!r} must be a non-empty str")
                found = value
    return found


def target_authority(target: str) -> str:
    """The authority grpcio derives from a target: the host:port it names."""
    rest = target
    lower = target.lower()
    if lower.startswith(("unix:", "unix-abstract:")):
        return "localhost"
    for scheme in ("ipv4:", "ipv6:"):
        if lower.startswith(scheme):
            return target[len(scheme) :].split(",")[0]
    for scheme in ("dns:", "http:", "https:"):
        if lower.startswith(scheme):
            rest = target[len(scheme) :]
            if rest.startswith("//"):
                authority, _, path = rest[2:].partition("/")
                rest = path if scheme == "dns:" else authority
            break
    return rest.lstrip("/") or target


def prepare(
    target: str, credentials: object | None, options: Any
) -> tuple[ChannelCredentials | None, str | None, ChannelAuth | None]:
    """Checks a channel's credentials and TLS options: (TLS credentials, TLS name,
    call authorization), all None for an insecure channel."""
    # grpc.default_authority itself is a channel option (_options.GRPC_KEYS): libplexus sends
    # it as :authority and, unless the TLS name is overridden, checks the certificate by it.
    authority = _option(options, AUTHORITY_KEY)
    if credentials is None:
        return None, None, None
    tls = as_channel_credentials(credentials)
    name = _option(options, TLS_NAME_KEY)
    auth = ChannelAuth(True, tls._plugins, authority or name or target_authority(target))
    return tls, name, auth


def apply_tls(lib: _ffi.Lib, handle: int, tls: ChannelCredentials, name: str | None) -> None:
    """Sets a plexus_channel_options handle for TLS with these credentials."""

    def check(rc: int, what: str) -> None:
        if rc:
            raise lib.error(rc, what)

    check(lib.channel_options_set_tls(handle, True), "TLS")
    roots = tls._root_certificates
    if roots is None:
        path = os.environ.get(ROOTS_ENV)
        if path:
            with open(path, "rb") as file:
                roots = file.read()
    if roots is not None:
        check(lib.channel_options_add_tls_ca_pem(handle, roots, len(roots)), "root_certificates")
    if tls._private_key is not None and tls._certificate_chain is not None:
        chain, key = tls._certificate_chain, tls._private_key
        check(
            lib.channel_options_set_tls_identity_pem(handle, chain, len(chain), key, len(key)),
            "client certificate (certificate_chain, private_key)",
        )
    if name is not None:
        check(lib.channel_options_set_tls_server_name(handle, name.encode("utf-8")), name)


# --------------------------------------------------------------------------- calls


class CredentialsFailed(Exception):
    """Call credentials refused a call: `status` is how it ends (never sent)."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.details)
        self.status = status


def plugins_for(auth: ChannelAuth | None, credentials: object) -> tuple[_Plugin, ...]:
    """The plugins to run for a call: the channel's, then the call's `credentials`.
    Raises CredentialsFailed (UNAUTHENTICATED, grpcio's text) for call credentials on an
    insecure channel, and ValueError for an object that is not call credentials."""
    plugins = auth.plugins if auth is not None else ()
    if credentials is not None:
        extra = call_plugins(credentials)
        if auth is None or not auth.secure:
            raise CredentialsFailed(
                Status.local(StatusCode.UNAUTHENTICATED, INSECURE_CALL_CREDENTIALS)
            )
        plugins = plugins + extra
    return plugins


def needs_thread(plugins: tuple[_Plugin, ...]) -> bool:
    """Whether running `plugins` calls user code (which may block)."""
    return any(p.fixed is None for p in plugins)


def _context(authority: str, method: bytes) -> AuthMetadataContext:
    """grpcio's plugin context: `https://<authority>/<package.Service>` and the method."""
    path = method.decode("utf-8", "replace")
    service, _, name = path.rpartition("/")
    if authority.endswith(":443"):
        authority = authority[: -len(":443")]
    return AuthMetadataContext(f"https://{authority}{service}", name)


class _Callback:
    """The callback handed to a plugin: records one answer and wakes the waiting call."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.metadata: Any = None
        self.error: str | None = None

    def __call__(self, metadata: Any, error: object) -> None:
        with self.lock:
            if self.done.is_set():
                raise RuntimeError("AuthMetadataPluginCallback invoked more than once!")
            if error is not None:
                self.error = str(error)
            else:
                self.metadata = metadata
            self.done.set()


def _plugin_metadata(plugin: _Plugin, context: AuthMetadataContext, wait: float | None) -> Any:
    """Runs one plugin and waits for its answer; raises CredentialsFailed."""
    if plugin.fixed is not None:
        return plugin.fixed
    assert plugin.plugin is not None
    callback = _Callback()
    try:
        plugin.plugin(context, callback)
    except Exception as exc:
        _LOG.exception("plexus: metadata plugin %r raised", plugin.name)
        with callback.lock:
            if not callback.done.is_set():
                callback.error = str(exc)
                callback.done.set()
    if not callback.done.wait(wait):
        raise CredentialsFailed(Status.local(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    if callback.error is not None:
        raise CredentialsFailed(
            Status.local(StatusCode.UNAVAILABLE, PLUGIN_FAILED + callback.error)
        )
    return callback.metadata


_LEGAL_KEY = re.compile(r"[0-9a-z_.-]+\Z")


def _checked_entry(entry: object) -> tuple[str, str | bytes]:
    """One metadata entry a plugin gave, checked as grpcio's core checks it (an illegal key
    is UNAVAILABLE "Illegal metadata"); raises CredentialsFailed."""

    def failed(text: str) -> CredentialsFailed:
        return CredentialsFailed(Status.local(StatusCode.UNAVAILABLE, text))

    if not isinstance(entry, (tuple, list)) or len(entry) != 2:
        raise failed(PLUGIN_FAILED + f"metadata entries must be (key, value) pairs, not {entry!r}")
    key, value = entry
    if isinstance(key, bytes):
        key = key.decode("ascii", "replace")
    if not isinstance(key, str) or not _LEGAL_KEY.match(key):
        raise failed("Illegal metadata")
    if key.endswith("-bin"):
        if not isinstance(value, (bytes, bytearray)):
            raise failed(PLUGIN_FAILED + f"the value of {key!r} must be bytes, not {value!r}")
        return key, bytes(value)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        raise failed(PLUGIN_FAILED + f"the value of {key!r} must be a str, not {value!r}")
    return key, value


def run_plugins(
    plugins: tuple[_Plugin, ...],
    authority: str,
    method: bytes,
    metadata: MetadataArg,
    timeout: float | None,
) -> tuple[MetadataArg, float | None]:
    """Runs `plugins` in order (blocking) and returns the call's metadata with theirs
    appended, and what is left of `timeout`. Raises CredentialsFailed."""
    if not plugins:
        return metadata, timeout
    start = time.monotonic()
    context = _context(authority, method)
    out = list(metadata or ())
    for plugin in plugins:
        wait = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        answer = _plugin_metadata(plugin, context, wait)
        if answer is None:
            continue
        try:
            if isinstance(answer, (str, bytes)):
                raise TypeError(answer)
            entries = tuple(answer)
        except TypeError:
            text = f"metadata must be (key, value) pairs, not {answer!r}"
            raise CredentialsFailed(
                Status.local(StatusCode.UNAVAILABLE, PLUGIN_FAILED + text)
            ) from None
        out.extend(_checked_entry(entry) for entry in entries)
    left = None if timeout is None else timeout - (time.monotonic() - start)
    if left is not None and left <= 0:
        raise CredentialsFailed(Status.local(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    return out, left


def authorize(
    auth: ChannelAuth | None,
    method: bytes,
    metadata: MetadataArg,
    credentials: object,
    timeout: float | None,
) -> tuple[MetadataArg, float | None]:
    """A blocking call's metadata and timeout once its call credentials have run on this
    thread. Raises CredentialsFailed."""
    plugins = plugins_for(auth, credentials)
    authority = auth.authority if auth is not None else ""
    return run_plugins(plugins, authority, method, metadata, timeout)
