#!/usr/bin/env bash
# Install vla-flow and what it needs on a fresh Debian machine (root). Offline-safe: only package registries.
#   bash .ci/install.sh          the project (torch 2.14.1, LIBERO, MuJoCo pinned, ...)
#   bash .ci/install.sh --test   plus pytest, Playwright and Debian's Chromium for the HTML report test
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
if [ "${1:-}" = "--test" ]; then
  extra="[test]"
  if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install Debian chromium; the browser test will be skipped with a reason" >&2
    fi
  fi
fi
python3 -m pip install -q -e ".${extra}"
python3 -c "import torch, mujoco, libero.libero; print('vla-flow installed: torch', torch.__version__, 'mujoco', mujoco.__version__)"
