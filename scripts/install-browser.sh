#!/usr/bin/env bash
# Installs what tests/browser.rs drives: Debian's chromium, and playwright-core from npm
# into tests/browser/node_modules (pinned by tests/browser/package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  echo "scripts/install-browser.sh: installing chromium" >&2
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "scripts/install-browser.sh: installing nodejs and npm" >&2
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
