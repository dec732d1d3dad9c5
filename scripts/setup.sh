#!/usr/bin/env bash
# Set up everything snapcore and its tests need on a Debian 12 machine, as root:
# Debian packages (only those missing), then a virtualenv in .venv with snapcore installed
# in editable mode, its test tools, and the example out-of-tree plugin.
# Safe to run again; prints what it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

# qemu: images and domains; libvhdi-utils, fuse3: independent VHD readers; lvm2, thin tools,
# udev, kmod, busybox-static: LVM inside the virtme-ng guest; fio: its write benchmark;
# binutils: strip, which keeps the Xen guest's dom0 initramfs small (scripts/xen-guest.sh);
# systemd: systemd-analyze, which checks the units of `snapcore policy install`.
APT_PACKAGES=(qemu-utils qemu-system-x86 python3-venv python3-pip hyperfine libvhdi-utils fuse3
    lvm2 thin-provisioning-tools udev kmod busybox-static fio strace binutils systemd)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
# Install quietly; pip's warnings about absent extra indexes are noise here.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2> >(grep -v '^WARNING: Location' >&2)
.venv/bin/python -m pip install -q --disable-pip-version-check -e examples/snapcore-rawcopy 2> >(grep -v '^WARNING: Location' >&2)
# Editable installs are not byte-compiled by pip, and this environment may forbid writing
# bytecode at import (PYTHONDONTWRITEBYTECODE): compile once, so each command starts fast.
.venv/bin/python -m compileall -q snapcore backends examples/snapcore-rawcopy >/dev/null
echo "setup: ready ($(.venv/bin/snapcore --version), $(qemu-img --version | head -1))"
