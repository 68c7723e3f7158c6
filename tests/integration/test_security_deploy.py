"""The secure compose overlay (deploy/secure.yml) against the real CLI and deploy/make-secrets.sh,
without Docker: every TELLM_* variable it sets is the environment form of a flag the service's
command accepts, every file it names is one make-secrets.sh writes, and the secrets work: a `tellm
serve` with them accepts the controller (route token) and refuses its token on an admin call."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import grpc
import pytest
import yaml

from .. import ROOT
MOUNT = Path("/etc/tellm/secrets")
FLAG_OF = {"TELLM_TLS_CERT": "tls_cert", "TELLM_TLS_KEY": "tls_key", "TELLM_TLS_CA": "tls_ca",
           "TELLM_AUTH_TOKEN_FILE": "auth_token_file"}


@pytest.fixture(scope="module")
def secrets(tmp_path_factory):
    d = tmp_path_factory.mktemp("deploy") / "secrets"
    subprocess.run(["bash", str(ROOT / "deploy/make-secrets.sh"), str(d)], check=True, capture_output=True)
    again = subprocess.run(["bash", str(ROOT / "deploy/make-secrets.sh"), str(d)], capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr  # never overwrites
    return d


def test_overlay_sets_real_flags_to_files_make_secrets_writes(secrets, monkeypatch):
    from tellm.cli import build_parser

    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    overlay = yaml.safe_load((ROOT / "deploy/secure.yml").read_text())["services"]
    assert set(overlay) == {"inference-cpu", "inference-gpu", "controller", "policy"}
    for name, svc in overlay.items():
        env = svc["environment"]
        assert set(env) == set(FLAG_OF), name
        assert any(v.endswith(f":{MOUNT}:ro") for v in svc["volumes"]), name
        for var, path in env.items():
            monkeypatch.setenv(var, path)
            assert Path(path).parent == MOUNT and (secrets / Path(path).name).is_file(), (name, path)
        command = [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(x)) for x in base[name]["command"]]
        args = build_parser().parse_args(command)  # the security flags' defaults read the environment
        for var, path in env.items():
            assert getattr(args, FLAG_OF[var]) == Path(path), (name, var)
        for var in env:
            monkeypatch.delenv(var)
    # Clients' tokens are in the server's table with the roles the overlay promises.
    roles = {line.split()[0]: line.split()[1] for line in (secrets / "tokens").read_text().splitlines()
             if line and not line.startswith("#")}
    assert roles == {"controller": "route", "policy": "admin"}


def test_secrets_work_with_tellm_serve(secrets, tmp_path):
    from ..inference_support import model_under_test
    from ..security_support import Serve

    from tellm.contract.client import InferenceClient, InferenceError
    from tellm.contract.security.settings import ClientSecurity
    from tellm.contract.security.tls import ClientTLS

    model, _ = model_under_test(tmp_path / "m")
    s = Serve(tmp_path, "--model", str(model), "--tls-cert", str(secrets / "inference.pem"), "--tls-key",
              str(secrets / "inference.key"), "--tls-ca", str(secrets / "ca.pem"), "--auth-token-file",
              str(secrets / "tokens"))

    def client(who):
        return InferenceClient(s.address, timeout_seconds=5, retries=0, security=ClientSecurity(
            ClientTLS(secrets / "ca.pem", secrets / f"{who}.pem", secrets / f"{who}.key"),
            (secrets / f"{who}.token").read_text().strip()))

    controller, policy = client("controller"), client("policy")
    try:
        assert controller.model_info().version
        with pytest.raises(InferenceError) as err:
            controller.reload_model()
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert policy.reload_model()[1] is False
        # The healthcheck of the inference container, with the variables the overlay sets there.
        env = {"TELLM_TLS_CA": str(secrets / "ca.pem"), "TELLM_TLS_CERT": str(secrets / "inference.pem"),
               "TELLM_TLS_KEY": str(secrets / "inference.key")}
        import os
        import sys

        r = subprocess.run([sys.executable, str(ROOT / "docker/healthcheck.py"), "grpc", s.address,
                            "tellm.v1.TrafficEngineeringService", "tellm.v1.PolicyService"],
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        controller.close()
        policy.close()
        s.stop()
