"""A grpcio TLS server for test_secure.py: the echo service of grpcio_server.py over
`grpc.ssl_server_credentials`, plus `/plexus.test.Auth/Whoami`, which answers (raw bytes,
no protobuf) a JSON object with what the server saw of the call: its ASCII request
metadata, `:authority` and, over mutual TLS, the client certificate's common name.

Run as `python grpcio_tls_server.py --stubs DIR --cert PEM --key PEM [--client-ca PEM]`;
with `--client-ca` client certificates are required. Prints `LISTENING <port>` once
serving on 127.0.0.1 and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent import futures
from pathlib import Path

import grpc

import grpcio_server


def whoami(request: bytes, context) -> bytes:
    metadata = [[k, v] for k, v in context.invocation_metadata() if isinstance(v, str)]
    # The authority is not in grpcio's public ServicerContext API; the call details hold it.
    host = context._rpc_event.call_details.host
    peer = context.auth_context().get("x509_common_name", [])
    return json.dumps(
        {
            "metadata": metadata,
            "authority": host.decode() if isinstance(host, bytes) else host,
            "peer_common_name": [name.decode() for name in peer],
        }
    ).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stubs", required=True, help="directory holding echo_pb2.py")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--client-ca")
    args = parser.parse_args()
    sys.path.insert(0, args.stubs)
    import echo_pb2

    pair = (Path(args.key).read_bytes(), Path(args.cert).read_bytes())
    ca = Path(args.client_ca).read_bytes() if args.client_ca else None
    credentials = grpc.ssl_server_credentials(
        [pair], root_certificates=ca, require_client_auth=ca is not None
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    server.add_generic_rpc_handlers(
        (
            grpcio_server.build(echo_pb2),
            grpc.method_handlers_generic_handler(
                "plexus.test.Auth", {"Whoami": grpc.unary_unary_rpc_method_handler(whoami)}
            ),
        )
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    print(f"LISTENING {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
