"""What a gRPC server or client needs to be secure, built from command-line flags.

``ServerSecurity``: TLS (optional mutual TLS), the token table, and the rule that a server bound to
a non-loopback address needs both TLS and tokens unless the operator says ``--insecure``.
``ClientSecurity``: the client's TLS files and token; ``channel(address)`` opens a channel with both.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import grpc

from .audit import AdminAudit
from .auth import AuthInterceptor, TokenTable, read_client_token, with_token
from .tls import ClientTLS, SecurityConfigError, ServerTLS, is_loopback, server_tls


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


# ----------------------------------------------------------------------------- flags
def add_server_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("security (TLS and tokens; required off loopback)")
    g.add_argument("--tls-cert", type=Path, default=None, metavar="FILE.pem", help="server certificate (chain)")
    g.add_argument("--tls-key", type=Path, default=None, metavar="FILE.pem", help="private key of --tls-cert")
    g.add_argument("--tls-ca", type=Path, default=None, metavar="FILE.pem",
                   help="require client certificates signed by this CA (mutual TLS)")
    g.add_argument("--auth-token-file", type=Path, default=None, metavar="FILE",
                   help="callers and their tokens, one 'NAME ROLE TOKEN' a line; ROLE route (RegisterTopology, "
                        "Route, reads) or admin (also ReloadModel, SetPolicy). Calls without a known token get "
                        "UNAUTHENTICATED, route tokens on admin calls PERMISSION_DENIED; health checks are open")
    g.add_argument("--insecure", action="store_true",
                   help="allow listening on a non-loopback address without TLS and tokens (a trusted network only)")


def server_security(args: argparse.Namespace, host: str) -> ServerSecurity:
    """ServerSecurity from ``add_server_args`` flags, checked against the listening ``host``."""
    tls = server_tls(args.tls_cert, args.tls_key, args.tls_ca)
    tokens = TokenTable.load(args.auth_token_file) if args.auth_token_file else None
    sec = ServerSecurity(tls, tokens, bool(args.insecure))
    sec.check_bind(host)
    return sec


def add_client_args(p: argparse.ArgumentParser, what: str = "the tellm gRPC services") -> None:
    g = p.add_argument_group(f"client security (for {what})")
    g.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates "
                                                      "(implied by --tls-ca / --tls-cert)")
    g.add_argument("--tls-ca", type=Path, default=None, metavar="FILE.pem",
                   help="CA that signed the server's certificate (turns TLS on)")
    g.add_argument("--tls-cert", type=Path, default=None, metavar="FILE.pem",
                   help="client certificate for mutual TLS (with --tls-key)")
    g.add_argument("--tls-key", type=Path, default=None, metavar="FILE.pem", help="private key of --tls-cert")
    g.add_argument("--auth-token-file", type=Path, default=None, metavar="FILE",
                   help="file holding this client's token, sent with every call")


def client_security(args: argparse.Namespace) -> ClientSecurity:
    """ClientSecurity from ``add_client_args`` flags (files are read now)."""
    tls = None
    if args.tls or args.tls_ca or args.tls_cert or args.tls_key:
        tls = ClientTLS(args.tls_ca, args.tls_cert, args.tls_key)
        tls.credentials()  # read the files now: a missing one is an operator error at start
    token = read_client_token(args.auth_token_file) if args.auth_token_file else None
    return ClientSecurity(tls, token)


__all__ = ["ClientSecurity", "PLAINTEXT", "SecurityConfigError", "ServerSecurity", "add_client_args",
           "add_server_args", "client_security", "server_security"]
