#!/usr/bin/env bash
# The test suite: set up the environment if needed, then run the unit tests and every notebook
# under papermill at smoke size. Extra arguments go to pytest (e.g. -m "not notebooks").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/ensure_env.sh"
cd "$GANSEG_ROOT"
exec "$PY" -m pytest "$@"
