#!/usr/bin/env bash
# The test suite: set up the environment (and Chromium, for the report's test) if needed, check lint and
# formatting with ruff, then run the unit tests and every notebook under papermill at smoke size. Extra arguments
# go to pytest (e.g. -m "not notebooks").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/ensure_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/ensure_browser.sh"
cd "$GANSEG_ROOT"
if ! { "$PY" -m ruff check --quiet . && "$PY" -m ruff format --check --quiet .; }; then
    echo "ruff found problems: fix them with '$PY -m ruff format . && $PY -m ruff check --fix .'" >&2
    exit 1
fi
exec "$PY" -m pytest "$@"
