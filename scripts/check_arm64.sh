#!/usr/bin/env bash
# Prove edge-verify installs and runs on a Raspberry Pi's platform: a Debian Bookworm arm64
# userland (what 64-bit Raspberry Pi OS is built on) run through qemu-user, with the package
# installed the way docs/getting-started.md tells a Pi user (from wheels only: nothing compiled).
#
#   sudo bash scripts/check_arm64.sh            # as root; .ci/run runs it
#
# The root filesystem is cached in $EDGE_VERIFY_ARM64_ROOTFS (default /var/cache/edge-verify/
# arm64-rootfs); a cold run takes about 15 minutes here, a warm one a few. Traps it handles:
# binfmt_misc is not mounted on these machines; qemu passes the host's x86 /proc/cpuinfo through
# (LiteRT's CPU detection then crashes), so an ARM one is mounted over it; qemu's default CPU
# model computes wrong embeddings (its emulated SME), so the CPU is pinned to a Pi 4's Cortex-A72
# (QEMU_CPU=cortex-a76 for a Pi 5); pip inside needs the host's pip configuration and CA bundle.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rootfs="${EDGE_VERIFY_ARM64_ROOTFS:-/var/cache/edge-verify/arm64-rootfs}"
export QEMU_CPU="${QEMU_CPU:-cortex-a72}"
work="$(mktemp -d)"
mounts=()

say() { printf '\n== %s\n' "$*"; }
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
bind() { # bind SOURCE TARGET-in-rootfs
  mkdir -p "$rootfs$2" 2>/dev/null || true
  [ -d "$1" ] || { [ -e "$rootfs$2" ] || touch "$rootfs$2"; }
  mount --bind "$1" "$rootfs$2"
  mounts+=("$rootfs$2")
}

[ "$(id -u)" = 0 ] || { echo "check_arm64.sh: run as root (mounts, chroot)" >&2; exit 2; }

say "qemu-user and debootstrap"
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static debootstrap >/dev/null
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
# the F flag (in the packaged rule) opens the interpreter now, so it also works inside the chroot
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register

if [ ! -x "$rootfs/usr/bin/python3" ] || [ ! -e "$rootfs/.edge-verify-complete" ]; then
  say "Debian Bookworm arm64 root filesystem (cached in $rootfs)"
  rm -rf "$rootfs.partial"
  mkdir -p "$(dirname "$rootfs")"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs.partial" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; exit 1; }
  touch "$rootfs.partial/.edge-verify-complete"
  rm -rf "$rootfs"
  mv "$rootfs.partial" "$rootfs"
fi

say "wheel of this checkout (pure Python) and sample inputs"
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$work/wheels" "$repo" 2>/dev/null ||
  python3 -m pip wheel -q --no-deps -w "$work/wheels" "$repo"
cp "$repo"/edge_verify/samples/*.jpg "$work/"
python3 - "$work" <<'PY'
import sys, pathlib
cpu = "".join(  # a Raspberry Pi 4's /proc/cpuinfo (4 Cortex-A72 cores)
    f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
    f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n"
    for i in range(4)
)
pathlib.Path(sys.argv[1], "cpuinfo").write_text(cpu + "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n")
PY

say "mounts: /proc (with an ARM cpuinfo), /dev, DNS, pip configuration, CA bundle, the wheel"
mount -t proc proc "$rootfs/proc" && mounts+=("$rootfs/proc")
mount -t sysfs sys "$rootfs/sys" && mounts+=("$rootfs/sys")
bind "$work/cpuinfo" /proc/cpuinfo
bind /dev /dev
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$rootfs/etc/pip.conf"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
bind "$work" /work

in_pi() { chroot "$rootfs" /usr/bin/env -i PATH=/opt/ev/bin:/usr/bin:/bin HOME=/root QEMU_CPU="$QEMU_CPU" \
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"; }

say "install: python3 -m venv, then pip with --only-binary=:all: (CPU $QEMU_CPU)"
in_pi uname -m
[ -x "$rootfs/opt/ev/bin/python" ] || in_pi python3 -m venv /opt/ev
wheel="$(cd "$work/wheels" && ls edge_verify-*.whl)"
in_pi pip install -q --only-binary=:all: --force-reinstall --no-deps "/work/wheels/$wheel"
in_pi pip install -q --only-binary=:all: "/work/wheels/$wheel"
in_pi python -c "import sys, edge_verify.cli, edge_verify.kiosk; assert 'tensorflow' not in sys.modules"

say "demo, doctor (known-answer self-test), compare"
in_pi edge-verify demo
in_pi edge-verify doctor
in_pi edge-verify compare /work/astronaut_enroll.jpg /work/astronaut_check.jpg
if in_pi edge-verify compare /work/astronaut_enroll.jpg /work/cameraman.jpg; then
  echo "check_arm64.sh: a stranger was accepted on arm64" >&2
  exit 1
fi
for bundle in resnet29 sface; do
  say "the $bundle bundle: demo (its self-test, then same person accepted, stranger rejected)"
  in_pi edge-verify demo --bundle "$bundle"
done

say "enroll, check, a short kiosk run on a video"
store=(--store /tmp/arm64-check/store.db)
rm -rf "$rootfs/tmp/arm64-check"
in_pi edge-verify enroll astronaut --source /work/astronaut_enroll.jpg "${store[@]}"
in_pi edge-verify check astronaut --source /work/astronaut_check.jpg "${store[@]}"
if in_pi edge-verify check astronaut --source /work/cameraman.jpg "${store[@]}"; then
  echo "check_arm64.sh: check accepted a stranger on arm64" >&2
  exit 1
fi
in_pi python - <<'PY'
import cv2, numpy as np
writer = cv2.VideoWriter("/work/door.avi", cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
face = cv2.resize(cv2.imread("/work/astronaut_check.jpg"), (400, 400))
for _ in range(20):
    frame = np.full((480, 640, 3), 60, np.uint8)
    frame[40:440, 120:520] = face
    writer.write(frame)
writer.release()
PY
in_pi edge-verify kiosk --source /work/door.avi --identity astronaut --liveness off --max-frames 20 --json \
  "${store[@]}" | tee "$work/kiosk.json"
grep -q '"accepted": [1-9]' "$work/kiosk.json" || { echo "check_arm64.sh: the kiosk accepted nobody" >&2; exit 1; }
in_pi edge-verify audit --verify "${store[@]}"

say "a mis-emulated CPU (QEMU_CPU=max, its SME) must be caught by the known-answer self-test"
if QEMU_CPU=max in_pi edge-verify doctor >"$work/max.txt" 2>&1; then
  grep self-test "$work/max.txt"
  if QEMU_CPU=max in_pi edge-verify compare /work/astronaut_enroll.jpg /work/cameraman.jpg; then
    echo "check_arm64.sh: with QEMU_CPU=max a stranger is accepted and the self-test did not notice" >&2
    exit 1
  fi
  echo "(this qemu computes correct embeddings with its max CPU model: nothing to catch)"
else
  grep self-test "$work/max.txt"
fi

say "arm64 ($QEMU_CPU): every check passed"
