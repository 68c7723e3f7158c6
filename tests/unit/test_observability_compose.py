"""docker-compose.yml is consistent with the tree: build contexts, Dockerfiles and stages, the one tellm image,
healthchecks, mounted files, profiles, loopback-only ports, the no-registry override, the Prometheus scrape
config and the services' command lines. File checks only; tests/test_compose_stack.py builds and runs the stack."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .._observability import ROOT, exporter_jobs

COMPOSE = ROOT / "docker-compose.yml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def _resolve(value: str) -> str:
    """Compose variable substitution with an empty environment: ${X:-default} -> default."""
    def sub(m):
        if m.group(2) is None:
            raise AssertionError(f"{value!r}: ${{{m.group(1)}}} has no default; the stack must start unconfigured")
        return m.group(2)
    return _VAR.sub(sub, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _stages(dockerfile) -> set[str]:
    return {m.lower() for m in re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text(), re.M | re.I)}


def _args(dockerfile) -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+([A-Za-z_]+)=?(\S*)", dockerfile.read_text(), re.M))


def test_expected_services_and_profiles(services):
    assert set(services) == {"controller", "inference-cpu", "inference-gpu", "policy", "prometheus", "grafana"}
    assert services["inference-cpu"]["profiles"] == ["cpu"]
    assert services["inference-gpu"]["profiles"] == ["gpu"]
    assert services["policy"]["profiles"] == ["policy"]
    for always in ("controller", "prometheus", "grafana"):
        assert "profiles" not in services[always], f"{always} must start with every profile"
    gpu = services["inference-gpu"]
    assert gpu["runtime"] == "nvidia"
    (dev,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]
    for variant in ("inference-cpu", "inference-gpu"):
        assert "inference" in services[variant]["networks"]["default"]["aliases"]


def test_builds_point_at_existing_contexts_dockerfiles_and_stages(services):
    built = 0
    for name, svc in services.items():
        if "build" not in svc:
            assert "image" in svc, f"{name}: neither build nor image"
            continue
        b = svc["build"]
        ctx = ROOT / _resolve(b["context"])
        assert ctx.is_dir(), f"{name}: build context {ctx} missing"
        df = ctx / b.get("dockerfile", "Dockerfile")
        assert df.is_file(), f"{name}: Dockerfile {df} missing"
        if "target" in b:
            assert b["target"].lower() in _stages(df), f"{name}: no stage {b['target']} in {df}"
        declared = _args(df)
        for arg in b.get("args", {}):
            assert arg in declared, f"{name}: build arg {arg} is not an ARG of {df}"
        if "docker/Dockerfile" in str(df):
            assert declared.get("BASE_IMAGE") == "python:3.12-slim", "BASE_IMAGE must default to the public python image"
            assert _resolve(b["args"]["BASE_IMAGE"]) == "python:3.12-slim"
        built += 1
    assert built == 2  # tellm (by the controller) and tellm-gpu


def test_one_tellm_image_built_once_and_run_by_every_cpu_service(services):
    """docker-compose v1 builds once per service with a build section: only one may build tellm:TAG."""
    users = {name for name, svc in services.items() if _resolve(svc.get("image", "")).startswith("tellm:")}
    assert users == {"controller", "inference-cpu", "policy"}
    assert [name for name in users if "build" in services[name]] == ["controller"]
    # Compose creates services in file order: the builder comes before the services that only run its image.
    order = list(services)
    assert all(order.index("controller") < order.index(name) for name in users - {"controller"})


def test_every_tellm_service_has_a_healthcheck(services):
    from tellm.contract.vocabulary import POLICY_SERVICE_NAME, TE_SERVICE_NAME as SERVICE_NAME

    for name in ("controller", "inference-cpu", "inference-gpu", "policy"):
        test = services[name]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "tellm-healthcheck"], f"{name}: {test}"
        if name.startswith("inference"):
            assert test[2:4] == ["grpc", "127.0.0.1:50051"] and set(test[4:]) == {SERVICE_NAME, POLICY_SERVICE_NAME}
    assert services["controller"]["healthcheck"]["test"][2:] == ["http", "http://127.0.0.1:9100/state"]
    port = _flag(services["policy"]["command"], "--metrics-port")
    assert services["policy"]["healthcheck"]["test"][2:] == ["http", f"http://127.0.0.1:{port}/metrics"]
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert dockerfile.count("COPY docker/healthcheck.py /usr/local/bin/tellm-healthcheck") == 2  # CPU and GPU
    assert (ROOT / "docker" / "healthcheck.py").stat().st_mode & 0o111, "the healthcheck must be executable"


def test_build_context_leaves_out_tarballs_and_generated_stubs():
    patterns = set((ROOT / ".dockerignore").read_text().split())
    for needed in (".git", ".venv", "*.tar", "*.tar.*", "contract/v1/*_pb2*.py", "contract/v1/*.pyi", "tests", "benchmarks"):
        assert needed in patterns, f".dockerignore does not leave out {needed}"


def test_cpu_image_never_builds_the_gpu_stages():
    """Docker's classic builder (docker-compose v1) builds every stage before --target."""
    df = (ROOT / "docker" / "Dockerfile").read_text()
    order = [m.lower() for m in re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", df, re.M | re.I)]
    assert order.index("runtime") < order.index("builder-gpu") < order.index("runtime-gpu"), order


def test_mounted_files_exist_and_named_volumes_are_declared(compose, services):
    named = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            src, dst, *mode = _resolve(v).split(":")
            assert dst.startswith("/"), f"{name}: {v}"
            if src.startswith((".", "/")):
                assert (ROOT / src).exists(), f"{name}: mounted {src} does not exist"
                assert mode == ["ro"], f"{name}: configuration mounts are read-only ({v})"
            else:
                assert src in named, f"{name}: named volume {src} not declared"


def test_ports_are_published_on_loopback_only(services):
    for name, svc in services.items():
        for p in svc.get("ports", []):
            assert str(p).startswith("127.0.0.1:"), f"{name}: port {p} is not bound to 127.0.0.1"


def _flag(command: list[str], flag: str) -> str:
    i = command.index(flag)
    return command[i + 1]


def test_prometheus_scrapes_the_services_on_their_metrics_ports(services):
    prom = services["prometheus"]
    (cfg_mount,) = [v for v in prom["volumes"] if v.endswith(":/etc/prometheus/prometheus.yml:ro")]
    cfg = yaml.safe_load((ROOT / cfg_mount.split(":")[0]).read_text())
    names = {}
    for name, svc in services.items():
        names[name] = name
        for alias in (svc.get("networks") or {}).get("default", {}).get("aliases", []):
            names.setdefault(alias, name)
    doc_jobs = {job: (exporter, port) for exporter, (port, job) in exporter_jobs().items()}
    scraped = {}
    for job in cfg["scrape_configs"]:
        (static,) = job["static_configs"]
        (target,) = static["targets"]
        host, port = target.rsplit(":", 1)
        assert host in names, f"{job['job_name']}: target host {host} is no service or alias"
        exporter, doc_port = doc_jobs[job["job_name"]]
        assert int(port) == doc_port, f"{job['job_name']}: port {port}, docs/metrics.md says {doc_port}"
        svc = services[names[host]]
        assert _flag(svc["command"], "--metrics-port") == port, f"{names[host]} does not serve metrics on {port}"
        assert f"127.0.0.1:{port}:{port}" in [_resolve(p) for p in svc["ports"]]
        scraped[job["job_name"]] = host
    assert set(scraped) == set(doc_jobs), "every exporter of docs/metrics.md is scraped"
    for variant in ("inference-cpu", "inference-gpu"):  # both variants serve what the alias promises
        assert _flag(services[variant]["command"], "--metrics-port") == "9102"


def test_controller_reaches_inference_through_the_alias(services):
    host, port = _flag(services["controller"]["command"], "--inference").rsplit(":", 1)
    assert host == "inference"
    for variant in ("inference-cpu", "inference-gpu"):
        cmd = services[variant]["command"]
        assert _flag(cmd, "--port") == port and _flag(cmd, "--host") == "0.0.0.0"


def test_policy_metrics_reachable_from_prometheus_container(services):
    """In a container, loopback is the container's own: the daemon's metrics must bind every interface."""
    from tellm.cli import build_parser

    parser = build_parser()
    if "policy" not in next(a for a in parser._actions if a.dest == "command").choices:
        pytest.skip("`tellm policy` is not part of this CLI")
    args = parser.parse_args([_resolve(str(c)) for c in services["policy"]["command"]])
    assert args.metrics_host == "0.0.0.0" and args.metrics_port == 9103


@pytest.mark.parametrize("service", ["controller", "inference-cpu", "inference-gpu", "policy"])
def test_service_command_lines_parse_with_the_tellm_cli(services, service):
    """The compose commands use flags the CLI really has (argparse of `tellm`, not a copy)."""
    from tellm.cli import build_parser

    command = [_resolve(str(c)) for c in services[service]["command"]]
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if command[0] not in sub.choices:
        pytest.skip(f"`tellm {command[0]}` is not part of this CLI; its compose command line cannot be checked")
    try:
        parser.parse_args(command)
    except SystemExit as exc:
        pytest.fail(f"{service}: `tellm {' '.join(command)}` does not parse (exit {exc.code})")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_prometheus_config_is_valid():
    r = subprocess.run(["promtool", "check", "config", "--syntax-only", str(ROOT / "deploy/prometheus/prometheus.yml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _compose_config(*files: str, profiles: str = "cpu,policy") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "TELLM_", "BASE_IMAGE"))}
    env["COMPOSE_PROFILES"] = profiles
    args = [a for f in files for a in ("-f", f)]
    r = subprocess.run(["docker-compose", *args, "config"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{files} {profiles}: {r.stderr}"
    return yaml.safe_load(r.stdout)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_accepts_the_file():
    for profiles in ("cpu", "gpu", "cpu,policy", "gpu,policy"):
        _compose_config("docker-compose.yml", profiles=profiles)


def test_env_file_starts_the_whole_stack():
    """`docker-compose up` with the shipped .env: CPU inference and the policy daemon (every scrape target)."""
    env = dict(line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines()
               if line.strip() and not line.startswith("#"))
    assert env == {"COMPOSE_PROFILES": "cpu,policy"}


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_no_registry_override_pulls_nothing():
    """deploy/no-registry.yml: every image is built locally on the local base, Grafana only on request."""
    services = _compose_config("docker-compose.yml", "deploy/no-registry.yml")["services"]
    for name in ("controller", "inference-gpu", "prometheus"):
        assert services[name]["build"]["args"]["BASE_IMAGE"] == "local/debian:bookworm", name
    assert Path(services["prometheus"]["build"]["context"]) == ROOT / "deploy" / "prometheus"
    assert services["prometheus"]["image"].startswith("tellm-prometheus:")
    assert services["grafana"]["profiles"] == ["grafana"]
    for name, svc in services.items():  # nothing else would need a registry
        assert "build" in svc or _resolve(str(svc.get("image", ""))).startswith("tellm:") \
            or "grafana" in svc.get("profiles", []), f"{name} would be pulled"
    header = (ROOT / "deploy" / "no-registry.yml").read_text()
    assert "COMPOSE_FILE=docker-compose.yml:deploy/no-registry.yml" in header
    assert "COMPOSE_FILE=docker-compose.yml:deploy/no-registry.yml" in (ROOT / "docs" / "deployment.md").read_text()


def test_compose_smoke_script_runs_outside_pytest():
    """The documented command starts: it depends on installed product modules only."""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "compose_smoke.py"), "--help"], cwd="/",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--prometheus" in r.stdout, r.stderr
