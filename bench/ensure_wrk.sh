#!/bin/sh
# Make sure the load generator is there: wrk from the distribution's packages.
# apt-get needs root; without it we say what to install and fail, rather than guess.
set -eu
if command -v wrk >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "wrk is missing: install it with 'apt-get install -y wrk' (needs root)" >&2
    exit 1
fi
echo "installing wrk from the distribution's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq wrk >/dev/null
command -v wrk >/dev/null 2>&1
