#!/bin/sh
# Make sure a command is there, from the distribution's packages: ensure_tool.sh COMMAND PACKAGE.
# apt-get needs root; without it we say what to install and fail, rather than guess.
set -eu
command_name=$1
package=$2
if command -v "$command_name" >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "$command_name is missing: install it with 'apt-get install -y $package' (needs root)" >&2
    exit 1
fi
echo "installing $package from the distribution's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "$package" >/dev/null
command -v "$command_name" >/dev/null 2>&1
