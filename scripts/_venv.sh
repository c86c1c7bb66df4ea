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
# "bytecode": venvs made before installs compiled their bytecode are set up again.
want="$( (cat "$ROOT/pyproject.toml" "$ROOT/requirements.lock"; echo "$RESOLUTION bytecode") | sha256sum | cut -c1-16)"
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
  # The installed packages' bytecode, as pip writes it at install: uv skips it, and where
  # PYTHONDONTWRITEBYTECODE is set (CI runners, containers) every process would compile
  # MLflow again (4.6 s instead of 1.6 s per `import mlflow`, in every test subprocess).
  "$PY" -m compileall -q -j 0 "$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    >>"$log" 2>&1 || true
  echo "$want" > "$STAMP"
  echo "ready in $((SECONDS - started)) s (installed with $how)" >&2
fi
export PATH="$VENV/bin:$PATH"
# This checkout's own modules (installed editable) get their bytecode here for the same
# reason; compileall rewrites only what changed since (well under a second).
"$PY" -m compileall -q -j 0 "$ROOT/luigiflow" "$ROOT/tests" "$ROOT/examples" >/dev/null 2>&1 || true
