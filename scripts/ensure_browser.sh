#!/usr/bin/env bash
# Sourced by test.sh: makes sure Chromium and its WebDriver are installed (the report's test opens report.html, and
# the widgets' test drives JupyterLab, in headless Chromium). Installs Debian's chromium and chromium-driver with
# apt-get when they are missing.
set -euo pipefail

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if ! command -v apt-get >/dev/null; then
        echo "Chromium or chromedriver is missing and apt-get is not available: install both, then rerun" >&2
        exit 1
    fi
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    log="${TMPDIR:-/tmp}/ganseg-browser-install.log"
    echo "Installing chromium and chromium-driver with apt-get; log: $log"
    if ! { $sudo_cmd apt-get update && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y chromium chromium-driver; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "Installing chromium failed; full log: $log" >&2
        exit 1
    fi
fi
