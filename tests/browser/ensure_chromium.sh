#!/usr/bin/env bash
# Make sure Debian's chromium is installed for the browser tests (tests/browser/). Playwright is
# pointed at /usr/bin/chromium instead of downloading a browser build of its own.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing and installing it needs root: apt-get install chromium" >&2
    exit 1
fi
echo "installing chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
