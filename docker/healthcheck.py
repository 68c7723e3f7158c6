#!/opt/tellm/bin/python3
"""Container healthcheck of the tellm services (installed in the image as tellm-healthcheck).

    tellm-healthcheck grpc 127.0.0.1:50051 tellm.v1.TrafficEngineeringService tellm.v1.PolicyService
    tellm-healthcheck http http://127.0.0.1:9100/state

grpc: standard gRPC health (grpc.health.v1.Health/Check) for each named service; healthy when every
one answers SERVING. Over TLS when TELLM_TLS_CA is set (the CA of the server's certificate), with
TELLM_TLS_CERT/TELLM_TLS_KEY as the client certificate when both are set (mutual TLS): the same
variables the secure compose setup gives `tellm serve`, whose certificate names 127.0.0.1. http: healthy when the URL answers 200. Exit status 0 healthy, 1 not (with the
reason on stderr, which `docker inspect` shows in the health log).
"""

from __future__ import annotations

import os
import sys
import urllib.request

TIMEOUT_SECONDS = 3.0


def check_grpc(address: str, services: list[str]) -> str | None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with _channel(grpc, address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in services or [""]:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_SECONDS).status
            except grpc.RpcError as exc:
                return f"{service or 'server'} at {address}: {exc.code().name}"
            if status != health_pb2.HealthCheckResponse.SERVING:
                return f"{service or 'server'} at {address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
    return None


def _channel(grpc, address: str):
    ca, cert, key = (os.environ.get(f"TELLM_TLS_{x}") for x in ("CA", "CERT", "KEY"))
    if not ca:
        return grpc.insecure_channel(address)

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(read(ca), read(key) if cert and key else None,
                                         read(cert) if cert and key else None)
    return grpc.secure_channel(address, creds)


def check_http(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as reply:  # noqa: S310 (local URL)
            return None if reply.status == 200 else f"{url}: HTTP {reply.status}"
    except OSError as exc:
        return f"{url}: {exc}"


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "grpc":
        problem = check_grpc(argv[1], argv[2:])
    elif len(argv) == 2 and argv[0] == "http":
        problem = check_http(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
