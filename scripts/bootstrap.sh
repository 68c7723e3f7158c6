#!/usr/bin/env bash
# Install everything tellm needs on a fresh Debian machine (run as root): system packages, then a
# virtual environment on Debian's Python (Mininet is a Debian package and lives there), then tellm.
# Idempotent and quick when nothing changed. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TELLM_VENV:-$ROOT/.venv}"
APT_PACKAGES=(python3 python3-venv python3-pip openvswitch-switch mininet iperf3 iputils-ping ethtool
              iproute2 prometheus docker.io docker-compose mmdebstrap)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "bootstrap: creating $VENV on Debian's python3 (sees Mininet)" >&2
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.tellm-installed"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/setup.py" "$ROOT"/proto/tellm/v1/*.proto | sha256sum | cut -c1-16)"
# Reinstall also when the generated gRPC stubs are gone (git clean): the install regenerates them.
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]] || ! compgen -G "$ROOT/contract/v1/*_pb2_grpc.py" >/dev/null; then
  echo "bootstrap: installing tellm and its Python dependencies into $VENV" >&2
  # The CPU build of torch (training extra): pin it so pip never pulls a multi-GB CUDA build.
  "$PY" -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>/dev/null \
    || "$PY" -m pip install -q --disable-pip-version-check torch
  "$PY" -m pip install -q --disable-pip-version-check -e "$ROOT[dev,train,llm]"
  echo "$want" >"$stamp"
fi
export PATH="$VENV/bin:$PATH"
