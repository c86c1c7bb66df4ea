# Sourced by the scripts: make sure .venv exists with this checkout's dependencies.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LUIGIFLOW_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.luigiflow-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -x "$PY" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "setting up $VENV (first run takes about two minutes)..." >&2
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip >&2
  "$PY" -m pip install --quiet -e "$ROOT[dev]" >&2
  echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
