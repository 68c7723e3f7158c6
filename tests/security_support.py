"""Helpers for the security tests: a throw-away PKI (cryptography) and `tellm serve` as a subprocess
whose log goes to a file (an audit storm would fill a pipe and block the server)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

TELLM = [sys.executable, "-c", "import sys; from tellm.cli import main; sys.exit(main())"]
LISTEN = re.compile(r"listening on (\S+):(\d+) metrics_port=(\d+|off)")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # signed by ca, CN=controller
    client_key: Path
    rogue_cert: Path  # signed by another CA
    rogue_key: Path


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key, cert) -> None:
    from cryptography.hazmat.primitives import serialization

    path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _cert(subject_cn: str, key, issuer_cn: str, issuer_key, ca: bool = False, server: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate, and a client
    certificate from another CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, rogue_ca_key = _key(), _key()
    _write(directory / "ca", ca_key, _cert("tellm-test-ca", ca_key, "tellm-test-ca", ca_key, ca=True))
    for name, cn, issuer, issuer_key, server in (("server", "localhost", "tellm-test-ca", ca_key, True),
                                                 ("client", "controller", "tellm-test-ca", ca_key, False),
                                                 ("rogue", "controller", "rogue-ca", rogue_ca_key, False)):
        k = _key()
        _write(directory / name, k, _cert(cn, k, issuer, issuer_key, server=server))
    d = directory
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
               d / "rogue.pem", d / "rogue.key")


class Serve:
    """`tellm serve` in a subprocess; ``log`` is its stderr file."""

    def __init__(self, tmp: Path, *args: str, expect_start: bool = True):
        tmp.mkdir(parents=True, exist_ok=True)
        self.log = tmp / f"serve-{time.monotonic_ns()}.log"
        cmd = [*TELLM, "serve", "--port", "0", "--metrics-port", "-1", "--grace", "1", "--watch-interval", "0",
               *args]
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.port = None
        if not expect_start:
            return
        line = self.proc.stdout.readline()
        m = LISTEN.search(line)
        if m is None:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"tellm serve did not start: {line!r}\n{self.log.read_text()[-3000:]}")
        self.port = int(m.group(2))
        self.address = f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()
