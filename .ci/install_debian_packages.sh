#!/usr/bin/env bash
# Chromium from Debian's packages, for the viewer's browser test (tests/viewer_test.py drives
# it through Playwright with executable_path=/usr/bin/chromium; `playwright install` is not
# used, it would download a browser). Idempotent; needs root or sudo.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
chromium --version
