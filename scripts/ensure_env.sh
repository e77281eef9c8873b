#!/usr/bin/env bash
# Sourced by reproduce.sh and test.sh: makes sure the project environment exists and is current,
# then exports PY, the interpreter to use. Re-installs only when pyproject.toml or the torch spec change.
# The environment has the [test] and [convert] extras: notebook 01 converts a TensorFlow module.
#
#   GANSEG_VENV        where the virtual environment lives (default: <repo>/.venv)
#   GANSEG_TORCH_SPEC  pip arguments that install torch (default: torch==2.13.0, the CPU build here);
#                      GPU example: "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
#   GANSEG_USE_ACTIVE_ENV=1  use the python on PATH as it is (e.g. the conda env from environment.yml)
set -euo pipefail

GANSEG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GANSEG_ROOT
# this checkout's helpers first, also for kernels and worker processes: an environment installed (editable) from
# another checkout, shared through GANSEG_VENV or GANSEG_USE_ACTIVE_ENV, would import that checkout's helpers
export PYTHONPATH="$GANSEG_ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [ "${GANSEG_USE_ACTIVE_ENV:-0}" = "1" ]; then
    PY="$(command -v python)"
    export PY
    return 0 2>/dev/null || exit 0
fi

venv="${GANSEG_VENV:-$GANSEG_ROOT/.venv}"
torch_spec="${GANSEG_TORCH_SPEC:-torch==2.13.0}"
stamp="$( (cat "$GANSEG_ROOT/pyproject.toml" "$GANSEG_ROOT/scripts/ensure_env.sh"; echo "$torch_spec") | sha256sum | cut -c1-16)"

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.ganseg-env" 2>/dev/null)" != "$stamp" ]; then
    echo "Setting up the environment in $venv (torch: $torch_spec); log: $venv/install.log"
    base_python="${GANSEG_PYTHON:-python3}"
    "$base_python" -m venv "$venv"
    log="$venv/install.log"
    : > "$log"
    # torch first, in its own call: later requirements (torch>=2.3) then keep this build.
    # shellcheck disable=SC2086
    if ! { "$venv/bin/python" -m pip install --upgrade pip \
           && "$venv/bin/python" -m pip install $torch_spec \
           && "$venv/bin/python" -m pip install -e "$GANSEG_ROOT[test,convert]"; } >>"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "Environment set-up failed; full log: $log" >&2
        exit 1
    fi
    echo "$stamp" > "$venv/.ganseg-env"
    echo "Environment ready."
fi
PY="$venv/bin/python"
export PY
