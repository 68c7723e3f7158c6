"""TLS for tellm's gRPC servers and clients, with gRPC's own credentials.

Server: a certificate and key (``--tls-cert``/``--tls-key``); with ``--tls-ca`` clients must present
a certificate signed by that CA (mutual TLS). Client: ``--tls-ca`` (the CA that signed the server's
certificate; default: the system roots), and ``--tls-cert``/``--tls-key`` for mutual TLS.
Every file is read once, at start; an unreadable or malformed one is a ``SecurityConfigError``
naming the flag.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc


class SecurityConfigError(ValueError):
    """A TLS or token setting that cannot be used (the message names the flag and the file)."""


def read_pem(path: str | Path, flag: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"{flag} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise SecurityConfigError(f"{flag} {path}: not a PEM file")
    return data


@dataclass(frozen=True)
class ServerTLS:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: mutual TLS (clients must present a certificate it signed)

    def credentials(self) -> grpc.ServerCredentials:
        chain = read_pem(self.cert, "--tls-cert")
        key = read_pem(self.key, "--tls-key")
        ca = read_pem(self.client_ca, "--tls-ca") if self.client_ca else None
        return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=ca is not None)

    def describe(self) -> str:
        return "mutual TLS" if self.client_ca else "TLS"


@dataclass(frozen=True)
class ClientTLS:
    ca: Path | None = None  # None: the system's root certificates
    cert: Path | None = None  # with key: mutual TLS
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise SecurityConfigError("--tls-cert and --tls-key go together (the client certificate and its key)")

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=read_pem(self.ca, "--tls-ca") if self.ca else None,
            private_key=read_pem(self.key, "--tls-key") if self.key else None,
            certificate_chain=read_pem(self.cert, "--tls-cert") if self.cert else None)


def server_tls(cert: str | Path | None, key: str | Path | None, ca: str | Path | None) -> ServerTLS | None:
    """The server's TLS setting from its flags (None: plaintext); checks the files now."""
    if cert is None and key is None:
        if ca is not None:
            raise SecurityConfigError("--tls-ca needs --tls-cert and --tls-key (the server's own certificate)")
        return None
    if cert is None or key is None:
        raise SecurityConfigError("--tls-cert and --tls-key go together (the server certificate and its key)")
    tls = ServerTLS(Path(cert), Path(key), Path(ca) if ca else None)
    try:
        tls.credentials()
    except SecurityConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - gRPC raises plain errors for a key that does not match
        raise SecurityConfigError(f"--tls-cert/--tls-key: {exc}") from None
    return tls


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
