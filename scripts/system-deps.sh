#!/usr/bin/env bash
# Debian packages flowfed's demo and tests need: `system-deps.sh bwrap[:bubblewrap] ...`.
# Each argument is COMMAND:PACKAGE; a missing command is installed with apt-get when this
# runs as root, otherwise it stops at once with the exact command to run (never half-way).
set -euo pipefail
missing=()
for pair in "$@"; do
    cmd="${pair%%:*}"
    pkg="${pair#*:}"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "flowfed needs these Debian packages: ${missing[*]}" >&2
    echo "install them, then run make again:  sudo apt-get install -y ${missing[*]}" >&2
    exit 2
fi
echo "installing ${missing[*]} (apt-get)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
