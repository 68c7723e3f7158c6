"""TLS, mutual TLS and token roles on `tellm serve` (a real subprocess), with certificates made in the
test: the right token and CA get through, a missing or unknown token is UNAUTHENTICATED, a route
token on an admin call is PERMISSION_DENIED (and audited), untrusted peers never complete the
handshake, and a server bound off loopback without TLS and tokens refuses to start."""

from __future__ import annotations

import json
import secrets

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ..inference_support import demands, model_under_test, paths_for, ring_topology
from ..security_support import Serve, make_pki

from tellm.contract.client import InferenceClient, InferenceError
from tellm.contract.policies import make_policy
from tellm.contract.policy_client import PolicyClient, PolicyServiceError
from tellm.contract.security.settings import ClientSecurity
from tellm.contract.security.tls import ClientTLS


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    pki = make_pki(root / "pki")
    tokens = {"controller": secrets.token_hex(16), "ops": secrets.token_hex(16)}
    table = root / "tokens"
    table.write_text("# name role token\n"
                     f"controller route {tokens['controller']}\nops admin {tokens['ops']}  # operators\n")
    model, _ = model_under_test(root / "model")
    topo = ring_topology(5, chords=1, seed=2)
    return root, pki, tokens, table, model, topo, paths_for(topo, k=2)


def _client(address, pki, token=None, cert=None, key=None, ca="ok"):
    tls = ClientTLS(pki.ca if ca == "ok" else None, cert, key)
    return InferenceClient(address, timeout_seconds=5, retries=0, security=ClientSecurity(tls, token))


def test_tls_and_token_roles(setup):
    root, pki, tokens, table, model, topo, paths = setup
    audit = root / "audit-tls.jsonl"
    s = Serve(root, "--model", str(model), "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
              "--auth-token-file", str(table), "--audit-log", str(audit))
    clients = []
    try:
        ok = _client(s.address, pki, tokens["controller"])
        clients.append(ok)
        h = ok.register_topology(topo, paths)
        assert ok.route(h, demands(paths)).split.shape == (paths.num_paths,)
        assert ok.health()

        for token, code in ((None, grpc.StatusCode.UNAUTHENTICATED), ("x" * 32, grpc.StatusCode.UNAUTHENTICATED)):
            c = _client(s.address, pki, token)
            clients.append(c)
            with pytest.raises(InferenceError) as err:
                c.route(h, demands(paths))
            assert err.value.code == code
            assert c.health()  # health checks need no token (probes)
        with pytest.raises(InferenceError) as err:
            ok.reload_model()
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED and "admin" in err.value.message

        admin = _client(s.address, pki, tokens["ops"])
        clients.append(admin)
        assert admin.reload_model()[1] is False
        pc = PolicyClient(s.address, security=ClientSecurity(ClientTLS(pki.ca), tokens["ops"]))
        pc.set_policy(make_policy("headroom"), reason="tls test")
        pc.close()
        pc = PolicyClient(s.address, security=ClientSecurity(ClientTLS(pki.ca), tokens["controller"]))
        assert pc.get_policy().policy.name == "headroom"  # reads are the route role's
        with pytest.raises(PolicyServiceError) as perr:
            pc.set_policy(make_policy("min_mlu"), reason="not allowed")
        assert perr.value.code == grpc.StatusCode.PERMISSION_DENIED
        pc.close()

        # Plaintext against TLS, and a client that trusts another CA: no call gets through.
        plain = InferenceClient(s.address, timeout_seconds=3, retries=0)
        rogue_trust = InferenceClient(s.address, timeout_seconds=3, retries=0, security=ClientSecurity(
            ClientTLS(pki.rogue_cert), tokens["ops"]))
        clients += [plain, rogue_trust]
        for c in (plain, rogue_trust):
            with pytest.raises(InferenceError) as err:
                c.model_info()
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        for c in clients:
            c.close()
        s.stop()
    entries = [json.loads(x) for x in audit.read_text().splitlines()]
    assert [(e["method"], e["who"], e["result"].split(":")[0]) for e in entries] == [
        ("ReloadModel", "token:controller", "refused"), ("ReloadModel", "token:ops", "ok"),
        ("SetPolicy", "token:ops", "ok"), ("SetPolicy", "token:controller", "refused")]
    assert "(TLS, 2 token(s);" in s.log_text()


def test_mutual_tls(setup):
    root, pki, tokens, table, model, topo, paths = setup
    audit = root / "audit-mtls.jsonl"
    s = Serve(root, "--model", str(model), "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
              "--tls-ca", str(pki.ca), "--auth-token-file", str(table), "--audit-log", str(audit))
    clients = []
    try:
        good = _client(s.address, pki, tokens["ops"], pki.client_cert, pki.client_key)
        clients.append(good)
        assert good.reload_model()[1] is False
        for cert, key in ((None, None), (pki.rogue_cert, pki.rogue_key)):
            c = _client(s.address, pki, tokens["ops"], cert, key)
            clients.append(c)
            with pytest.raises(InferenceError) as err:
                c.model_info()
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
        # The health service is open to any caller with a trusted certificate.
        with grpc.secure_channel(s.address, ClientTLS(pki.ca, pki.client_cert, pki.client_key).credentials()) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for c in clients:
            c.close()
        s.stop()
    [entry] = [json.loads(x) for x in audit.read_text().splitlines()]
    assert entry["who"] == "token:ops cert:controller" and entry["result"].startswith("ok")


def test_non_loopback_without_tls_and_tokens_refuses_to_start(setup, tmp_path, capsys):
    from tellm.cli import main

    root, pki, tokens, table, model, *_ = setup
    for extra, missing in (((), "TLS (--tls-cert/--tls-key) and tokens"),
                           (("--auth-token-file", str(table)), "without TLS"),
                           (("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)), "without tokens")):
        assert main(["serve", "--model", str(model), "--host", "0.0.0.0", "--port", "0", *extra]) == 2
        err = capsys.readouterr().err
        assert "refusing to listen on 0.0.0.0" in err and missing in err, err
    bad = tmp_path / "tokens"
    bad.write_text("someone superuser 0123456789abcdef0123\n")
    assert main(["serve", "--model", str(model), "--auth-token-file", str(bad)]) == 2
    assert "tokens:1: expected 'NAME ROLE TOKEN'" in capsys.readouterr().err
    s = Serve(tmp_path, "--model", str(model), "--host", "0.0.0.0", "--insecure")
    try:
        assert InferenceClient(s.address, timeout_seconds=5).health()
    finally:
        s.stop()
