"""grpcio TLS servers for the C ABI's TLS tests (tests/c/test_tls.c, tests/c/test_cpp.cpp).

Usage: python grpcio_tls_server.py CERT_DIR, where CERT_DIR holds what `plexus-peer certs`
writes (ca.pem, server.pem, server.key). Serves on 127.0.0.1, on free ports:

* TLS: plexus.peer.Echo (tests/peer/py/echo_server.py) over TLS with server.pem, no client
  certificate asked for;
* mTLS: the same, requiring a client certificate signed by ca.pem;
* no-h2: a TLS server whose only ALPN protocol is http/1.1, which completes handshakes and
  then closes the connection: a server that does not speak gRPC's HTTP/2.

On both Echo servers, Unary also sends the request's `authorization` entries back in its
initial metadata as `x-authorization`, so a test sees which bearer token arrived.

Prints `LISTENING <tls port> <mtls port> <no-h2 port>` once all three serve, then serves
until killed (SIGTERM or SIGINT).
"""

from __future__ import annotations

import signal
import socket
import ssl
import sys
import threading
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "peer" / "py"))
import echo_server  # noqa: E402  (found through the path above)


class AuthEcho(echo_server.EchoServicer):
    """Echo whose Unary also echoes the `authorization` metadata."""

    def Unary(self, request, context):
        tokens = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
        context.send_initial_metadata(tuple(("x-authorization", t) for t in tokens))
        if request.status_code != 0:
            context.abort(echo_server._CODES[request.status_code], request.status_message)
        return echo_server.pb2.EchoResponse(message=request.message, payload=request.payload)


def echo_server_on(credentials) -> tuple[grpc.Server, int]:
    """An AuthEcho server over TLS with `credentials` on a free port."""
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    echo_server.pb2_grpc.add_EchoServicer_to_server(AuthEcho(), server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    if port == 0:
        raise RuntimeError("could not bind a port on 127.0.0.1")
    server.start()
    return server, port


def http1_only_server(cert: Path, key: Path) -> int:
    """A TLS listener that offers only http/1.1 by ALPN; returns its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            conn, _ = listener.accept()
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    certs = Path(sys.argv[1])
    ca = (certs / "ca.pem").read_bytes()
    pair = [((certs / "server.key").read_bytes(), (certs / "server.pem").read_bytes())]
    tls, tls_port = echo_server_on(grpc.ssl_server_credentials(pair))
    mtls, mtls_port = echo_server_on(
        grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=True)
    )
    no_h2_port = http1_only_server(certs / "server.pem", certs / "server.key")
    print(f"LISTENING {tls_port} {mtls_port} {no_h2_port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    tls.stop(None)
    mtls.stop(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
