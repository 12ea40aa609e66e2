#!/usr/bin/env bash
# System packages the tests need, from Debian, installed only if missing (idempotent; needs
# root or sudo):
#   chromium -- the viewer's browser test (tests/viewer_test.py drives it through Playwright
#               with executable_path=/usr/bin/chromium; `playwright install` would download
#               a browser);
#   g++      -- builds the sparse step's CPU kernels on first use (sae_jax/sparse.py).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
