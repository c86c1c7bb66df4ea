# Sourced by the scripts: make sure .venv exists with this checkout's dependencies at the
# versions pinned in requirements.lock. Re-installs only when pyproject.toml or the lock
# changed since the last install. Installs with uv (fetched from PyPI into the venv)
# when it can, else with pip; the installer's output goes to a log shown only on failure.
#   LUIGIFLOW_VENV=DIR             another venv (CI keeps one per dependency set)
#   LUIGIFLOW_RESOLUTION=lowest-direct|highest
#                                  ignore the lock: the lowest declared versions of the direct
#                                  dependencies, or the newest resolvable ones (uv only)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LUIGIFLOW_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.luigiflow-installed"
UV_VERSION="0.13.9"
RESOLUTION="${LUIGIFLOW_RESOLUTION:-}"
want="$( (cat "$ROOT/pyproject.toml" "$ROOT/requirements.lock"; echo "$RESOLUTION") | sha256sum | cut -c1-16)"
if [ ! -x "$PY" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  started=$SECONDS
  echo "setting up $VENV from ${RESOLUTION:-requirements.lock} (about 1-2 minutes the first time)..." >&2
  [ -x "$PY" ] || python3 -m venv "$VENV"
  log="$VENV/install.log"
  : > "$log"
  # uv must use this machine's Python, never download one.
  export UV_PYTHON_DOWNLOADS=never PIP_DISABLE_PIP_VERSION_CHECK=1
  spec=("-e" "$ROOT[dev]" "-c" "$ROOT/requirements.lock")
  if [ -n "$RESOLUTION" ]; then
    # --upgrade: what an earlier install left must not stand in for the wanted versions
    spec=("-e" "$ROOT[dev]" "--resolution" "$RESOLUTION" "--upgrade")
  fi
  if { [ -x "$VENV/bin/uv" ] || "$PY" -m pip install --quiet "uv==$UV_VERSION"; } >>"$log" 2>&1 \
    && "$VENV/bin/uv" pip install --python "$PY" --quiet "${spec[@]}" >>"$log" 2>&1; then
    how="uv"
  elif [ -z "$RESOLUTION" ] && "$PY" -m pip install --quiet "${spec[@]}" >>"$log" 2>&1; then
    how="pip"
  else
    tail -n 30 "$log" >&2
    echo "setup failed; the whole log is $log" >&2
    exit 1
  fi
  echo "$want" > "$STAMP"
  echo "ready in $((SECONDS - started)) s (installed with $how)" >&2
fi
export PATH="$VENV/bin:$PATH"
