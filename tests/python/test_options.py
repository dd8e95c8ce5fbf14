"""Channel options: grpcio's grpc.* keys and plexus keywords, what they map to, what they do
on the wire, and how bad values fail."""

from __future__ import annotations

import echo_pb2
import grpc
import pytest
from conftest import WAIT, wait_until

import plexus
from plexus import _options

Req = echo_pb2.EchoRequest
MIB = 1024 * 1024


# --------------------------------------------------------------------------- the mapping


def test_grpc_keys_map_to_plexus_settings():
    settings = _options.collect(
        [
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", 8 * MIB),
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.primary_user_agent", "tests/1.0"),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5_000),
            ("grpc.min_reconnect_backoff_ms", 3_000),
            ("grpc.client_idle_timeout_ms", 60_000),
            ("grpc.http2.max_frame_size", 32_768),
            ("grpc.http2.lookahead_bytes", 1 << 20),
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_concurrent_streams", 100),
            ("grpc.enable_retries", 0),
            ("grpc.inhibit_health_checking", 1),
            ("grpc.dns_min_time_between_resolutions_ms", 5_000),
            ("grpc.default_compression_algorithm", 2),
        ],
        {},
    )
    assert settings == {
        "keepalive_time": 10.0,
        "keepalive_timeout": 5.0,
        "keepalive_permit_without_calls": True,
        "max_send_message_size": None,
        "max_receive_message_size": 8 * MIB,
        "lb_policy": "round_robin",
        "user_agent": "tests/1.0",
        "backoff_initial": 0.2,
        "backoff_max": 5.0,
        "connect_timeout": 3.0,
        "idle_timeout": 60.0,
        "max_frame_size": 32_768,
        "initial_stream_window_size": 1 << 20,
        "shared": False,
        "enable_retries": False,
        "health_checking": False,
        "min_resolve_interval": 5.0,
        "compression": 2,
    }


def test_grpc_disabled_values():
    settings = _options.collect(
        [("grpc.keepalive_time_ms", 2**31 - 1), ("grpc.client_idle_timeout_ms", 2**31 - 1)], {}
    )
    assert settings == {"keepalive_time": 0.0, "idle_timeout": None}


def test_keywords_win_over_grpc_keys():
    settings = _options.collect([("grpc.keepalive_time_ms", 1000)], {"keepalive_time": 30})
    assert settings == {"keepalive_time": 30}


def test_unknown_keys_are_ignored_like_grpcio():
    options = [
        ("grpc.ssl_target_name_override", "foo.test"),
        ("grpc.so_reuseport", 0),
        ("grpc.some_future_option", "x"),
        ("my.own.key", b"bytes"),
    ]
    assert _options.collect(options, {}) == {}
    plexus.insecure_channel("localhost:1", options=options).close()


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "options, error, words",
    [
        ("grpc.keepalive_time_ms", TypeError, "sequence of"),
        ({"grpc.keepalive_time_ms": 1}, TypeError, "sequence of"),
        ([("grpc.keepalive_time_ms",)], TypeError, "pair"),
        ([(5, 1)], TypeError, "keys must be str"),
        ([("grpc.keepalive_time_ms", 1.5)], TypeError, "int, str or bytes"),
        ([("any.key", [1])], TypeError, "int, str or bytes"),
        ([("grpc.keepalive_time_ms", "10s")], TypeError, "must be an int"),
        ([("grpc.keepalive_time_ms", -5)], ValueError, "at least 0"),
        ([("grpc.keepalive_timeout_ms", 0)], ValueError, "positive"),
        ([("grpc.max_receive_message_length", -2)], ValueError, "at least -1"),
        ([("grpc.keepalive_permit_without_calls", 2)], TypeError, "bool"),
        ([("grpc.lb_policy_name", "weighted_magic")], ValueError, "lb_policy"),
        ([("grpc.lb_policy_name", 1)], TypeError, "must be a str"),
        ([("grpc.http2.max_frame_size", 10)], ValueError, "max_frame_size"),
        ([("grpc.primary_user_agent", "bad\nagent")], ValueError, "user_agent"),
    ],
)
def test_malformed_grpc_options_raise(options, error, words):
    with pytest.raises(error, match=words):
        plexus.insecure_channel("localhost:1", options=options)


@pytest.mark.parametrize(
    "keywords, error, words",
    [
        ({"keepalive": 10}, TypeError, "unknown channel option 'keepalive'"),
        ({"keepalive_time": "10"}, TypeError, "seconds"),
        ({"keepalive_timeout": -1}, ValueError, "positive"),
        ({"max_connections_per_endpoint": 0}, ValueError, "at least 1"),
        ({"shared": "yes"}, TypeError, "bool"),
        ({"backoff_jitter": 1.5}, ValueError, "backoff"),
        ({"initial_connection_window_size": 2**31}, ValueError, "initial_connection_window_size"),
    ],
)
def test_malformed_keywords_raise(keywords, error, words):
    with pytest.raises(error, match=words):
        plexus.insecure_channel("localhost:1", **keywords)


# --------------------------------------------------------------------------- effects


def test_max_receive_message_length(target):
    big = Req(payload=b"x" * (3 * MIB))
    with plexus.insecure_channel(target, [("grpc.max_receive_message_length", 1 * MIB)]) as ch:
        unary = ch.unary_unary("/plexus.peer.Echo/Unary", request_serializer=Req.SerializeToString)
        with pytest.raises(grpc.RpcError) as info:
            unary(big, timeout=WAIT)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert unary(Req(payload=b"x" * 1000), timeout=WAIT)
    with plexus.insecure_channel(target, [("grpc.max_receive_message_length", -1)]) as ch:
        unary = ch.unary_unary("/plexus.peer.Echo/Unary", request_serializer=Req.SerializeToString)
        assert len(unary(big, timeout=WAIT)) > 3 * MIB


def test_max_send_message_length(target):
    with plexus.insecure_channel(target, [("grpc.max_send_message_length", 1000)]) as ch:
        unary = ch.unary_unary("/plexus.peer.Echo/Unary", request_serializer=Req.SerializeToString)
        with pytest.raises(grpc.RpcError) as info:
            unary(Req(payload=b"x" * 2000), timeout=WAIT)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert unary(Req(payload=b"x" * 100), timeout=WAIT) is not None


def test_round_robin_uses_every_endpoint(plexus_server, grpcio_server):
    a = plexus_server.target.split(":")[1]
    b = grpcio_server.target.split(":")[1]
    target = f"ipv4:127.0.0.1:{a},127.0.0.1:{b}"
    options = [("grpc.lb_policy_name", "round_robin")]
    with plexus.insecure_channel(target, options, shared=False) as channel:
        unary = channel.unary_unary("/plexus.peer.Echo/Unary")

        def both_connected():
            unary(b"", timeout=WAIT)
            return channel.stats()["connections"] == 2

        # The second endpoint joins the rotation once its connection is up.
        wait_until(both_connected, what="round_robin to connect to both endpoints")
        assert channel.stats()["endpoints"] == 2
    with plexus.insecure_channel(target, shared=False) as channel:  # pick_first
        unary = channel.unary_unary("/plexus.peer.Echo/Unary")
        for _ in range(10):
            unary(b"", timeout=WAIT)
        assert channel.stats()["connections"] == 1


def _request_compression(channel, **kwargs) -> str:
    """How the Rust server saw the request arrive: "<grpc-encoding> <compressed flag>"."""
    unary = channel.unary_unary("/plexus.peer.Echo/Unary", request_serializer=Req.SerializeToString)
    _, call = unary.with_call(Req(payload=b"z" * 10_000), timeout=WAIT, **kwargs)
    return dict(call.initial_metadata())["x-request-compression"]


def test_request_compression(plexus_server):
    target = plexus_server.target
    with plexus.insecure_channel(target, shared=False) as channel:
        assert _request_compression(channel) == "identity 0"
        assert _request_compression(channel, compression=grpc.Compression.Gzip) == "gzip 1"
        assert _request_compression(channel, compression=grpc.Compression.Deflate) == "deflate 1"
        assert _request_compression(channel, compression="gzip") == "gzip 1"
    with plexus.insecure_channel(target, compression=grpc.Compression.Gzip) as channel:
        assert _request_compression(channel) == "gzip 1"
        # A call's own choice wins over the channel's.
        nothing = grpc.Compression.NoCompression
        assert _request_compression(channel, compression=nothing) == "identity 0"
    with plexus.insecure_channel(target, [("grpc.default_compression_algorithm", 2)]) as ch:
        assert _request_compression(ch) == "gzip 1"


def test_compressed_requests_and_responses(target):
    payload = bytes(range(256)) * 400
    with plexus.insecure_channel(target, compression=grpc.Compression.Gzip) as channel:
        unary = channel.unary_unary(
            "/plexus.peer.Echo/Unary",
            request_serializer=Req.SerializeToString,
            response_deserializer=echo_pb2.EchoResponse.FromString,
        )
        for algorithm in ("gzip", "deflate"):
            reply = unary(
                Req(payload=payload), metadata=[("x-response-compression", algorithm)], timeout=WAIT
            )
            assert reply.payload == payload
        stream = channel.unary_stream(
            "/plexus.peer.Echo/ServerStream",
            request_serializer=Req.SerializeToString,
            response_deserializer=echo_pb2.EchoResponse.FromString,
        )
        replies = list(
            stream(
                Req(count=3, payload=payload),
                metadata=[("x-response-compression", "gzip")],
                compression=grpc.Compression.Deflate,
                timeout=WAIT,
            )
        )
        assert [r.payload for r in replies] == [payload] * 3


def test_plexus_keywords_are_accepted(target):
    with plexus.insecure_channel(
        target,
        [("grpc.keepalive_time_ms", 60_000)],
        shared=False,
        keepalive_timeout=20,
        keepalive_permit_without_calls=False,
        max_receive_message_size=None,
        initial_stream_window_size=1 << 20,
        initial_connection_window_size=1 << 21,
        connect_timeout=10,
        multiple_connections=True,
        max_connections_per_endpoint=4,
        backoff_initial=0.5,
        backoff_max=10,
        idle_timeout=300,
        lb_policy="pick_first",
        user_agent="plexus-tests",
        resolve_interval=60,
        min_resolve_interval=5,
        health_checking=False,
    ) as channel:
        assert channel.unary_unary("/plexus.peer.Echo/Unary")(b"", timeout=WAIT) == b""
