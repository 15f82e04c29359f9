#!/usr/bin/env bash
# Installs everything FaceScope needs on a Debian machine: Chromium (plotly's PNG export and the
# app's browser test drive it headless) and the Python packages of requirements.txt.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q && $SUDO apt-get install -y -q chromium chromium-driver
fi
pip install -q -r requirements.txt
pip install -q --no-deps -e .  # the project itself (editable): zoo, train, analysis, app, bench importable anywhere
