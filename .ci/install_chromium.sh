#!/usr/bin/env bash
# Install Debian's Chromium for .ci/check_pages.py (headless browser check of the built book).
# Idempotent: returns at once when a Chromium is already on PATH. Needs root (CI runs as root).
set -euo pipefail
for name in chromium chromium-browser; do
  if command -v "$name" >/dev/null 2>&1; then
    echo "chromium: already installed ($("$name" --version 2>/dev/null | head -n 1))"
    exit 0
  fi
done
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
echo "chromium: installed ($(chromium --version 2>/dev/null | head -n 1))"
