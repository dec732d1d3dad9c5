#!/usr/bin/env bash
# Run the LVM test suite (tests/lvm, pytest -m lvm) inside a virtme-ng guest.
#
# This machine's kernel has no device-mapper, so LVM runs inside a small guest booted under TCG
# with Debian's kernel (its modules include dm-snapshot and dm-thin-pool). The guest sees this
# machine's files (/ read-only, tmpfs overlays on /etc, /tmp, /var...), runs pytest with the
# repository's .venv, builds its volume groups on loop devices backed by files in its own
# /dev/shm, and writes its results to .cache/lvm-guest/, the one directory it may write back.
#
#   scripts/lvm-guest.sh [PYTEST ARGS...]   prepare (if needed), boot once, run the suite
#   scripts/lvm-guest.sh --prepare          only install what is missing and fetch the kernel
#   scripts/lvm-guest.sh --exec 'COMMAND'   boot and run COMMAND in the guest (bash -c), e.g.
#                                           'bash tests/data/lvm/record.sh'
#
# Preparing is idempotent and quick once done: Debian packages and pip packages are installed
# only when missing, and the kernel package is downloaded and unpacked into .cache/kernel/ only
# when no kernel is there yet. Exits 0 only when the guest ran at least one test and none failed.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
KCACHE=$REPO/.cache/kernel
OUT=$REPO/.cache/lvm-guest
VENV=$REPO/.venv
# What the guest needs from this machine (lvm2 tools, udev so /dev/VG/LV links appear, kmod
# for modprobe, busybox-static for virtme-ng's init, qemu to boot it, fio to measure, and
# qemu-utils for the mixed qcow2 + LV tests).
APT_PACKAGES=(lvm2 thin-provisioning-tools udev kmod busybox-static qemu-system-x86 qemu-utils fio)
PIP_PACKAGES=(virtme-ng pytest-testinfra)
GUEST_TIMEOUT=${SNAPCORE_LVM_GUEST_TIMEOUT:-2400}

log() { echo "lvm-guest: $*" >&2; }

# -- inside the guest -----------------------------------------------------------------------

guest_setup() {
    export LVM_SUPPRESS_FD_WARNINGS=1 SNAPCORE_LVM_GUEST=1 SNAPCORE_LVM_RESULTS=$OUT
    export PATH=$VENV/bin:/usr/sbin:/sbin:/usr/bin:/bin
    for module in dm-mod dm-snapshot dm-thin-pool loop; do
        modprobe "$module"
    done
    # Under TCG, waiting for udev to run its rules for every device LVM makes costs seconds
    # per command; LVM then makes the /dev nodes itself (lvm.conf(5): activation/udev_rules).
    # The guest's /etc is a scratch overlay. SNAPCORE_LVM_UDEV=1 keeps LVM's udev settings.
    if [ "${SNAPCORE_LVM_UDEV:-0}" != 1 ]; then
        printf 'activation {\n\tudev_sync = 0\n\tudev_rules = 0\n}\n' >/etc/lvm/lvmlocal.conf
    fi
}

in_guest() {
    guest_setup
    set +e
    "$VENV/bin/python" -m pytest tests/lvm -m lvm -p no:cacheprovider \
        --junitxml="$OUT/junit.xml" "$@" 2>&1 | tee "$OUT/pytest.log"
    echo "${PIPESTATUS[0]}" >"$OUT/rc"
}

if [ "${1:-}" = "--in-guest" ]; then
    shift
    in_guest "$@"
    exit 0
fi
if [ "${1:-}" = "--in-guest-exec" ]; then
    guest_setup
    set +e
    bash -c "$2" 2>&1 | tee "$OUT/exec.log"
    echo "${PIPESTATUS[0]}" >"$OUT/rc"
    exit 0
fi

# -- on this machine ------------------------------------------------------------------------

prepare_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        log "no $VENV: run scripts/setup.sh first"
        exit 2
    fi
    if ! "$VENV/bin/python" -c "import virtme_ng, testinfra" 2>/dev/null; then
        log "installing into .venv: ${PIP_PACKAGES[*]}"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}" \
            2> >(grep -v '^WARNING: Location' >&2)
    fi
}

# Print the path of the unpacked kernel image, fetching it first if there is none.
prepare_kernel() {
    local image
    image=$(ls "$KCACHE"/root/boot/vmlinuz-* 2>/dev/null | head -1 || true)
    if [ -n "$image" ] && [ -f "$KCACHE/root/.complete" ]; then
        echo "$image"
        return
    fi
    # linux-image-amd64 is a metapackage; the kernel is the package it depends on.
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        apt-get update -qq
        pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fi
    [ -n "$pkg" ] || { log "cannot find the kernel package linux-image-amd64 depends on"; exit 2; }
    log "fetching $pkg into .cache/kernel"
    rm -rf "$KCACHE/download" "$KCACHE/root.new"
    mkdir -p "$KCACHE/download" "$KCACHE/root.new"
    (cd "$KCACHE/download" && apt-get download -qq "$pkg" 2>&1 | grep -v "^W: Download is performed unsandboxed" >&2 || true)
    local deb
    deb=$(ls "$KCACHE"/download/*.deb 2>/dev/null | head -1 || true)
    [ -n "$deb" ] || { log "apt-get download $pkg failed"; exit 2; }
    dpkg-deb -x "$deb" "$KCACHE/root.new"
    local version
    version=$(ls "$KCACHE/root.new/lib/modules")
    # The package ships no modules.dep (its postinst makes it); modprobe in the guest needs it.
    depmod -a -b "$KCACHE/root.new" "$version"
    touch "$KCACHE/root.new/.complete"
    rm -rf "$KCACHE/root" "$KCACHE/download"
    mv "$KCACHE/root.new" "$KCACHE/root"
    ls "$KCACHE"/root/boot/vmlinuz-*
}

prepare_packages
KERNEL=$(prepare_kernel)
if [ "${1:-}" = "--prepare" ]; then
    log "ready: $KERNEL"
    exit 0
fi

rm -rf "$OUT"
mkdir -p "$OUT"
mode=pytest
guest_env="env SNAPCORE_LVM_UDEV=${SNAPCORE_LVM_UDEV:-0} SNAPCORE_LVM_FULL_CONFORMANCE=${SNAPCORE_LVM_FULL_CONFORMANCE:-}"
if [ "${1:-}" = "--exec" ]; then
    mode=exec
    guest_cmd="$guest_env $REPO/scripts/lvm-guest.sh --in-guest-exec $(printf '%q' "${2:?--exec needs a command}")"
else
    guest_cmd="$guest_env $REPO/scripts/lvm-guest.sh --in-guest"
    for arg in "$@"; do
        guest_cmd+=" $(printf '%q' "$arg")"
    done
fi
log "booting $(basename "$KERNEL") under TCG (2 CPUs, 2 GiB)"
start=$(date +%s)
set +e
# Through a pipe: QEMU reopens its stdout and stderr by path (/proc/self/fd/N) without
# O_APPEND, so given a regular file it would write the guest's console over the start of it,
# wiping what the test command printed before.
PATH=$VENV/bin:$PATH timeout "$GUEST_TIMEOUT" vng --run "$KERNEL" --disable-kvm --cpus 2 --memory 2G \
    --rwdir "$OUT" --cwd "$REPO" --exec "$guest_cmd" </dev/null 2>&1 | cat
vng_rc=${PIPESTATUS[0]}
set -e
log "guest finished after $(($(date +%s) - start)) s (vng exit status $vng_rc)"

if [ "$mode" = exec ]; then
    [ -f "$OUT/rc" ] || { log "FAILED: the command did not run in the guest"; exit 1; }
    exit "$(cat "$OUT/rc")"
fi
if [ ! -f "$OUT/rc" ] || [ ! -f "$OUT/junit.xml" ]; then
    log "FAILED: the guest did not run the tests (no result in $OUT)"
    exit 1
fi
rc=$(cat "$OUT/rc")
# Count what pytest ran from its JUnit report; "no tests ran" is a failure too.
read -r tests failures errors skipped < <("$VENV/bin/python" - "$OUT/junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
total = [sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")]
print(*total)
EOF
)
ran=$((tests - skipped))
log "guest pytest: exit status $rc, $ran run, $failures failed, $errors errors, $skipped skipped"
if [ "$rc" != 0 ] || [ "$failures" != 0 ] || [ "$errors" != 0 ] || [ "$ran" -le 0 ]; then
    log "FAILED"
    exit 1
fi
if [ -f "$OUT/measurements.md" ]; then
    cat "$OUT/measurements.md"
fi
log "passed"
