#!/usr/bin/env bash
# The main job: set up the environment if needed, then run every notebook in notebooks/ in order,
# headless with papermill, writing executed notebooks and a summary under results/.
#   bash scripts/reproduce.sh            full run on the embedded default
#   bash scripts/reproduce.sh --smoke    same notebooks with the tiny parameters of notebooks/smoke_params.yml
# Further options: python -m helpers.runner --help
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/ensure_env.sh"
cd "$GANSEG_ROOT"
exec "$PY" -m helpers.runner "$@"
