"""The controller's OpenFlow listener over TLS, against a real `tellm controller` subprocess: switches
must present a certificate from --ofp-ssl-ca, and with a topology file only declared dpids are
accepted (others are disconnected and logged). The switch side is a minimal OpenFlow 1.5 speaker
(hello, features reply) over Python's ssl; real Open vSwitch over TLS needs a global OVS SSL setting
that would leak into other Mininet tests."""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import pytest
from ..security_support import TELLM, make_pki

from .. import ROOT
OFP_VERSION = 0x06  # OpenFlow 1.5
OFPT_HELLO, OFPT_FEATURES_REQUEST, OFPT_FEATURES_REPLY = 0, 5, 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _recv_exact(sock, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _recv_msg(sock) -> tuple[int, int]:
    version, mtype, length, xid = struct.unpack("!BBHI", _recv_exact(sock, 8))
    _recv_exact(sock, length - 8)
    return mtype, xid


def _handshake(sock, dpid: int) -> None:
    sock.sendall(struct.pack("!BBHI", OFP_VERSION, OFPT_HELLO, 8, 1))
    while True:
        mtype, xid = _recv_msg(sock)
        if mtype == OFPT_FEATURES_REQUEST:
            body = struct.pack("!QIBB2xII", dpid, 0, 254, 0, 0, 0)
            sock.sendall(struct.pack("!BBHI", OFP_VERSION, OFPT_FEATURES_REPLY, 8 + len(body), xid) + body)
            return


def _closed_within(sock, seconds: float) -> bool:
    """True when the controller closes the connection within ``seconds`` (messages are read and dropped)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            _recv_msg(sock)
        except (EOFError, ConnectionError, ssl.SSLError):
            return True
        except (socket.timeout, TimeoutError):
            return False
    return False


def _tls_client(pki, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ofp")
    pki = make_pki(tmp / "pki")
    port = _free_port()
    log = tmp / "controller.log"
    with log.open("w") as err:
        proc = subprocess.Popen([*TELLM, "controller", "--topology", str(ROOT / "deploy/topology-example.yaml"),
                                 "--router", "ecmp", "--of-port", str(port), "--metrics-port", "0", "--api-port", "0",
                                 "--ofp-ssl-cert", str(pki.server_cert), "--ofp-ssl-key", str(pki.server_key),
                                 "--ofp-ssl-ca", str(pki.ca)], stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
    deadline = time.monotonic() + 60
    while "controller listening" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    yield port, pki, log
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def test_declared_switch_over_mutual_tls_is_kept_undeclared_is_refused(controller):
    port, pki, log = controller
    ctx = _tls_client(pki, pki.client_cert, pki.client_key)
    assert "(TLS, switch certificates required)" in log.read_text()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as sock:
        _handshake(sock, dpid=999)
        assert _closed_within(sock, 10), "an undeclared dpid kept its connection"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as sock:
        _handshake(sock, dpid=1)  # s1 in the topology file
        assert not _closed_within(sock, 2.0), "a declared switch was disconnected"
    text = log.read_text()
    assert "refused switch dpid=999" in text and "refused switch dpid=1 " not in text


@pytest.mark.parametrize("client", ["rogue-ca", "no-certificate", "plain-tcp"])
def test_switch_without_a_trusted_certificate_is_refused(controller, client):
    port, pki, _ = controller
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if client == "plain-tcp":
            raw.sendall(struct.pack("!BBHI", OFP_VERSION, OFPT_HELLO, 8, 1))
            assert _closed_within(raw, 10)
            return
        cert = (pki.rogue_cert, pki.rogue_key) if client == "rogue-ca" else (None, None)
        ctx = _tls_client(pki, *cert)
        with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):
            with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
                _handshake(sock, dpid=1)  # TLS 1.3 reports a refused client certificate at the first read
