#!/usr/bin/env bash
# Install the edge-verify door kiosk on Raspberry Pi OS Bookworm (64-bit).
#   sudo ./install.sh [PATH_TO_EDGE_VERIFY_SOURCE]
# Creates the user `edge-verify`, a venv in /opt/edge-verify/venv (with system site packages, so the
# apt-installed picamera2 is importable), the config /etc/edge-verify/kiosk.toml and the systemd unit.
set -euo pipefail

SRC="${1:-$(cd "$(dirname "$0")/../.." && pwd)}"
PREFIX=/opt/edge-verify
HERE="$(cd "$(dirname "$0")" && pwd)"

if [ "$(id -u)" -ne 0 ]; then
    echo "run as root: sudo $0" >&2
    exit 1
fi

apt-get update
apt-get install -y python3-venv python3-picamera2 python3-lgpio

id -u edge-verify >/dev/null 2>&1 || useradd --system --home-dir /var/lib/edge-verify --create-home \
    --groups video,gpio edge-verify

python3 -m venv --system-site-packages "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --upgrade pip
"$PREFIX/venv/bin/pip" install "${SRC}[kiosk]"

install -d -m 0755 /etc/edge-verify
if [ ! -f /etc/edge-verify/kiosk.toml ]; then
    install -m 0644 "$HERE/kiosk.toml" /etc/edge-verify/kiosk.toml
fi
install -m 0644 "$HERE/edge-verify-kiosk.service" /etc/systemd/system/edge-verify-kiosk.service
systemctl daemon-reload

echo "Installed. Enrol someone, then start the kiosk:"
echo "  sudo -u edge-verify $PREFIX/venv/bin/edge-verify enroll alice --source picamera2 --frames 5"
echo "  sudo systemctl enable --now edge-verify-kiosk"
