#!/usr/bin/env bash
# Installs what tests/deploy.rs checks the deploy/ files with: systemd-analyze (systemd)
# for the unit, promtool (prometheus) for the alert rules and a live /metrics scrape.
set -euo pipefail
missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if ((${#missing[@]})); then
  echo "scripts/install-deploy-tools.sh: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
