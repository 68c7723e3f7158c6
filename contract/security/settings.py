"""What a gRPC server or client needs to be secure (built from flags by ``flags.py``).

``ServerSecurity``: TLS (optional mutual TLS), the token table, and the rule that a server bound to
a non-loopback address needs both TLS and tokens unless the operator says ``--insecure``.
``ClientSecurity``: the client's TLS files and token; ``channel(address)`` opens a channel with both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import grpc

from .audit import AdminAudit
from .auth import AuthInterceptor, TokenTable, with_token
from .tls import ClientTLS, SecurityConfigError, ServerTLS, is_loopback

__all__ = ["ClientSecurity", "PLAINTEXT", "SecurityConfigError", "ServerSecurity"]


@dataclass(frozen=True)
class ServerSecurity:
    tls: ServerTLS | None = None
    tokens: TokenTable | None = None
    insecure: bool = False  # allow a non-loopback address without TLS and tokens

    def check_bind(self, host: str) -> None:
        """Refuse to expose a server beyond this machine without TLS and tokens (unless ``insecure``)."""
        if is_loopback(host) or self.insecure or (self.tls is not None and self.tokens is not None):
            return
        missing = " and ".join(x for x, ok in (("TLS (--tls-cert/--tls-key)", self.tls is not None),
                                               ("tokens (--auth-token-file)", self.tokens is not None)) if not ok)
        raise SecurityConfigError(f"refusing to listen on {host} without {missing}: anyone who reaches the port "
                                  "could change routing. Configure them, bind 127.0.0.1, or pass --insecure")

    def interceptors(self, audit: AdminAudit | None = None) -> list[grpc.ServerInterceptor]:
        return [AuthInterceptor(self.tokens, audit)]

    def add_port(self, server: grpc.Server, address: str) -> int:
        if self.tls is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, self.tls.credentials())

    def describe(self) -> str:
        parts = [self.tls.describe() if self.tls else "plaintext"]
        parts.append(f"{len(self.tokens)} token(s)" if self.tokens else "no authentication")
        return ", ".join(parts)


@dataclass(frozen=True)
class ClientSecurity:
    tls: ClientTLS | None = None
    token: str | None = None

    def channel(self, address: str, options: Sequence[tuple] = ()) -> grpc.Channel:
        ch = (grpc.secure_channel(address, self.tls.credentials(), options=list(options)) if self.tls
              else grpc.insecure_channel(address, options=list(options)))
        return with_token(ch, self.token)


PLAINTEXT = ClientSecurity()
