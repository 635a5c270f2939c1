#!/usr/bin/env bash
# The HTML report test renders the page in a real headless browser: Debian's chromium.
# Installed here when missing and we may (root + apt); otherwise that one test skips and says why.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: chromium missing and cannot be installed here (needs root and apt-get); the browser test will skip" >&2
  exit 0
fi
echo "ensure-chromium: installing Debian's chromium for the HTML report test" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null \
  || echo "ensure-chromium: apt-get install chromium failed; the browser test will skip" >&2
exit 0
