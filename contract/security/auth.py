"""Token authentication with two roles, as a gRPC server interceptor and a client interceptor.

Server token file (``--auth-token-file`` of ``tellm serve`` / ``tellm policy serve``), one caller a
line, ``#`` starts a comment::

    # name        role    token
    controller    route   9f2c...   # RegisterTopology, Route and every read
    policy-daemon admin   77ab...   # also ReloadModel and SetPolicy

Clients send ``authorization: Bearer <token>`` as call metadata; their ``--auth-token-file`` holds
the token alone. A call without a known token gets UNAUTHENTICATED; a ``route`` token on an admin
method gets PERMISSION_DENIED. Health checks need no token (load balancers and container health
probes). The caller's name (``token:<name>``, plus ``cert:<CN>`` under mutual TLS) is what the audit
trail records.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc

from .audit import CALLER, AdminAudit
from .tls import SecurityConfigError

log = logging.getLogger("tellm.contract.security")

ROLES = ("route", "admin")
#: Methods that change what the server does for everyone: the admin role only.
ADMIN_METHODS = frozenset({"/tellm.v1.TrafficEngineeringService/ReloadModel", "/tellm.v1.PolicyService/SetPolicy"})
#: Methods open to anyone who can connect (probes).
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
METADATA_KEY = "authorization"
_TOKEN_RE = re.compile(r"^[\x21-\x7e]{16,4096}$")  # printable, no spaces; at least 16 characters


def required_role(method: str) -> str | None:
    """The role a method needs (None: no token needed)."""
    if method in OPEN_METHODS:
        return None
    return "admin" if method in ADMIN_METHODS else "route"


@dataclass(frozen=True)
class Caller:
    name: str
    role: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """Known tokens (kept as SHA-256 digests) -> caller name and role."""

    def __init__(self, entries: dict[bytes, Caller]):
        self._by_digest = entries

    @classmethod
    def load(cls, path: str | Path) -> "TokenTable":
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise SecurityConfigError(f"--auth-token-file {path}: {exc.strerror or exc}") from None
        entries: dict[bytes, Caller] = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 3 or parts[1] not in ROLES or not _TOKEN_RE.match(parts[2]):
                raise SecurityConfigError(f"--auth-token-file {path}:{n}: expected 'NAME ROLE TOKEN' with ROLE one of "
                                          f"{', '.join(ROLES)} and a token of 16+ printable characters")
            d = _digest(parts[2])
            if d in entries:
                raise SecurityConfigError(f"--auth-token-file {path}:{n}: this token is already given to "
                                          f"{entries[d].name!r}")
            entries[d] = Caller(parts[0], parts[1])
        if not entries:
            raise SecurityConfigError(f"--auth-token-file {path}: no tokens in the file")
        return cls(entries)

    def lookup(self, token: str) -> Caller | None:
        d = _digest(token)
        for known, who in self._by_digest.items():  # constant-time comparison of every entry
            if hmac.compare_digest(known, d):
                return who
        return None

    def __len__(self) -> int:
        return len(self._by_digest)


def read_client_token(path: str | Path) -> str:
    """The token in a client's ``--auth-token-file`` (its first non-comment line)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise SecurityConfigError(f"--auth-token-file {path}: {exc.strerror or exc}") from None
    tokens = [x.split("#", 1)[0].strip() for x in lines]
    tokens = [t for t in tokens if t]
    if not tokens or not _TOKEN_RE.match(tokens[0]):
        raise SecurityConfigError(f"--auth-token-file {path}: expected one token of 16+ printable characters")
    return tokens[0]


def _cert_name(context) -> str | None:
    try:
        cn = context.auth_context().get("x509_common_name")
    except Exception:  # noqa: BLE001 - no auth context on a plaintext call
        return None
    return cn[0].decode(errors="replace") if cn else None


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks every call's token and role (when ``tokens`` is set) and records who is calling.

    Runs inside the handler's thread (it wraps the handler), so the caller's identity is in
    ``audit.CALLER`` for the handler; refused admin calls go to ``audit`` as well.
    """

    def __init__(self, tokens: TokenTable | None, audit: AdminAudit | None = None):
        self.tokens = tokens
        self.audit = audit or AdminAudit()

    def _identify(self, method: str, context) -> str | None:
        """The caller's identity; aborts the call when it is not allowed."""
        cert = _cert_name(context)
        need = required_role(method)
        if self.tokens is None or need is None:
            return f"cert:{cert}" if cert else None
        token = None
        for key, value in context.invocation_metadata() or ():
            if key == METADATA_KEY and isinstance(value, str) and value.startswith("Bearer "):
                token = value[len("Bearer "):].strip()
        who = self.tokens.lookup(token) if token else None
        if who is None:
            self._refuse(context, method, grpc.StatusCode.UNAUTHENTICATED,
                         "a valid token is required (metadata 'authorization: Bearer <token>')",
                         "refused: no token" if token is None else "refused: unknown token")
        if need == "admin" and who.role != "admin":
            self._refuse(context, method, grpc.StatusCode.PERMISSION_DENIED,
                         f"{method.rsplit('/', 1)[-1]} needs an admin token; {who.name!r} has the {who.role} role",
                         f"refused: {who.name!r} has the {who.role} role", who=f"token:{who.name}")
        return f"token:{who.name}" + (f" cert:{cert}" if cert else "")

    def _refuse(self, context, method: str, code, message: str, audit_result: str, who: str | None = None):
        if method in ADMIN_METHODS:
            token = CALLER.set(who)
            try:
                self.audit.record(context, method.rsplit("/", 1)[-1], {}, audit_result)
            finally:
                CALLER.reset(token)
        else:
            log.info("%s from %s: %s", method, context.peer(), audit_result)
        context.abort(code, message)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        def guard(behaviour: Callable) -> Callable:
            def call(request_or_iterator, context):
                token = CALLER.set(self._identify(method, context))
                try:
                    return behaviour(request_or_iterator, context)
                finally:
                    CALLER.reset(token)
            return call

        kinds = (("unary_unary", grpc.unary_unary_rpc_method_handler),
                 ("unary_stream", grpc.unary_stream_rpc_method_handler),
                 ("stream_unary", grpc.stream_unary_rpc_method_handler),
                 ("stream_stream", grpc.stream_stream_rpc_method_handler))
        for attr, make in kinds:
            behaviour = getattr(handler, attr)
            if behaviour is not None:
                return make(guard(behaviour), request_deserializer=handler.request_deserializer,
                            response_serializer=handler.response_serializer)
        return handler


class _TokenMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                     grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call of a channel."""

    def __init__(self, token: str):
        self._md = (METADATA_KEY, f"Bearer {token}")

    def _details(self, d):
        md = [*(d.metadata or ()), self._md]
        return _CallDetails(d.method, d.timeout, md, d.credentials, getattr(d, "wait_for_ready", None),
                            getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: list | None
    credentials: object
    wait_for_ready: bool | None
    compression: object


def with_token(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    """``channel`` sending ``token`` with every call (unchanged when ``token`` is None)."""
    return grpc.intercept_channel(channel, _TokenMetadata(token)) if token else channel
