"""Command-line flags of the gRPC servers and clients; argparse only at import time (grpc is
imported when the flags are turned into settings), so ``tellm --help`` stays fast."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

#: Each security flag can also come from the environment (containers mount secrets and set these):
#: TELLM_TLS_CERT, TELLM_TLS_KEY, TELLM_TLS_CA, TELLM_AUTH_TOKEN_FILE. A flag given wins.
ENV_PREFIX = "TELLM_"


def _env(flag: str) -> Path | None:
    value = os.environ.get(ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper())
    return Path(value) if value else None


def _path_arg(g, flag: str, metavar: str, help: str) -> None:
    env = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
    g.add_argument(flag, type=Path, default=_env(flag), metavar=metavar, help=f"{help} (env {env})")


def add_server_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("security (TLS and tokens; required off loopback)")
    _path_arg(g, "--tls-cert", "FILE.pem", "server certificate (chain)")
    _path_arg(g, "--tls-key", "FILE.pem", "private key of --tls-cert")
    _path_arg(g, "--tls-ca", "FILE.pem", "require client certificates signed by this CA (mutual TLS)")
    _path_arg(g, "--auth-token-file", "FILE",
              "callers and their tokens, one 'NAME ROLE TOKEN' a line; ROLE route (RegisterTopology, Route, "
              "reads) or admin (also ReloadModel, SetPolicy). Calls without a known token get UNAUTHENTICATED, "
              "route tokens on admin calls PERMISSION_DENIED; health checks are open")
    g.add_argument("--insecure", action="store_true",
                   help="allow listening on a non-loopback address without TLS and tokens (a trusted network only)")


def server_security(args: argparse.Namespace, host: str):
    """ServerSecurity from ``add_server_args`` flags, checked against the listening ``host``; raises
    SecurityConfigError."""
    from .auth import TokenTable
    from .settings import ServerSecurity
    from .tls import server_tls

    tls = server_tls(args.tls_cert, args.tls_key, args.tls_ca)
    tokens = TokenTable.load(args.auth_token_file) if args.auth_token_file else None
    sec = ServerSecurity(tls, tokens, bool(args.insecure))
    sec.check_bind(host)
    return sec


def add_client_args(p: argparse.ArgumentParser, what: str = "the tellm gRPC services") -> None:
    g = p.add_argument_group(f"client security (for {what})")
    g.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates "
                                                      "(implied by --tls-ca / --tls-cert)")
    _path_arg(g, "--tls-ca", "FILE.pem", "CA that signed the server's certificate (turns TLS on)")
    _path_arg(g, "--tls-cert", "FILE.pem", "client certificate for mutual TLS (with --tls-key)")
    _path_arg(g, "--tls-key", "FILE.pem", "private key of --tls-cert")
    _path_arg(g, "--auth-token-file", "FILE", "file holding this client's token, sent with every call")


def client_security(args: argparse.Namespace):
    """ClientSecurity from ``add_client_args`` flags (files are read now); raises SecurityConfigError."""
    from .auth import read_client_token
    from .settings import ClientSecurity
    from .tls import ClientTLS

    tls = None
    if args.tls or args.tls_ca or args.tls_cert or args.tls_key:
        tls = ClientTLS(args.tls_ca, args.tls_cert, args.tls_key)
        tls.credentials()  # read the files now: a missing one is an operator error at start
    token = read_client_token(args.auth_token_file) if args.auth_token_file else None
    return ClientSecurity(tls, token)


