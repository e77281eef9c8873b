#!/usr/bin/env bash
# The main job: set up the environment if needed, then run every notebook in notebooks/ in order,
# headless with papermill, writing executed notebooks and a summary under results/.
#   bash scripts/reproduce.sh            full run on the embedded default
#   bash scripts/reproduce.sh --smoke    same notebooks at the tiny sizes of notebooks/profiles/smoke.yml
#   bash scripts/reproduce.sh --profile NAME [--smoke]   a parameter set of notebooks/profiles/ (results/NAME/)
# Further options: python -m helpers.runner --help
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/ensure_env.sh"
cd "$GANSEG_ROOT"
exec "$PY" -m helpers.runner "$@"
