#!/usr/bin/env bash
# Coral USB Accelerator / Dev Board: install the EdgeTPU runtime from Coral's apt source.
#   sudo ./install.sh            # libedgetpu1-std (standard clock)
# The x86-64 host that compiles bundles also needs: sudo ./install.sh --compiler
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "run as root: sudo $0" >&2
    exit 1
fi

apt-get install -y curl gnupg
install -d -m 0755 /etc/apt/keyrings
curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | gpg --dearmor -o /etc/apt/keyrings/coral.gpg
echo "deb [signed-by=/etc/apt/keyrings/coral.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main" \
    > /etc/apt/sources.list.d/coral-edgetpu.list
apt-get update
if [ "${1:-}" = "--compiler" ]; then
    apt-get install -y edgetpu-compiler
else
    apt-get install -y libedgetpu1-std
fi
