#!/usr/bin/env bash
# Downloads and verifies the released weights and embeddings into weights/ and embeddings/ (see helpers/assets.py).
#   bash download_all.sh --list                 what exists, where it goes, what is in place
#   bash download_all.sh --only bigbigan bg-direction
#   bash download_all.sh --force --dest DIR     re-download into DIR/weights and DIR/embeddings
# Reruns are idempotent: files whose sha256 matches weights/assets.lock.json (embeddings/...) are skipped offline.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/ensure_env.sh"
exec "$PY" -m helpers.assets "$@"
