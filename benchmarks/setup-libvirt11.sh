#!/usr/bin/env bash
# Install libvirt 11.3.0 from Debian's bookworm-backports for benchmarks/live_checkpoint.py,
# on a Debian 12 machine that has libvirt 9.0 (upgraded) or no libvirt at all, without touching
# the system's QEMU 7.2 (qemu-system-x86, qemu-utils stay bookworm's).
#
#   benchmarks/setup-libvirt11.sh          install (if needed); print the QEMU 10 binary to use
#   benchmarks/setup-libvirt11.sh --check  only say whether libvirt 11.3.0 is installed (exit 1 if not)
#
# How: bookworm-backports is added to apt's sources by scripts/qemu10.sh (which also unpacks
# the QEMU 10 that the benchmark runs beside 7.2). apt is asked for the libvirt packages at the
# pinned version with `-t bookworm-backports --no-install-recommends`; it first simulates the
# plan (`-s`) and refuses if the plan would install or upgrade any QEMU package from backports
# (libvirt-daemon-driver-qemu depends on `qemu-kvm | qemu-system`: on a machine without QEMU,
# bookworm's QEMU 7.2 is asked for explicitly with `qemu-system-x86/bookworm`).
# Configuration files the machine already has are kept (--force-confold). No daemon is started
# here: there is no systemd; the benchmark starts virtlogd and libvirtd itself (`-d`). Debian's
# 11.3.0-2~bpo12+1 ships the monolithic libvirtd only (no virtqemud), and virtlogd in
# libvirt-daemon-log.
#
# QEMU 10 under libvirt: libvirt's capability probe lists every QOM type, which loads every
# module. A QEMU 10 without its optional module packages looks for the missing ones in the
# system's module directory, finds QEMU 7.2's, refuses them ("Only modules from the same build
# can be loaded") and aborts (util/module.c), so the probe fails ("Unable to read from
# monitor: Connection reset by peer"; found with strace -f on libvirtd). scripts/qemu10.sh
# unpacks those module packages too; this script prints its wrapper, which the benchmark gives
# to libvirt (<emulator>) and to snapcore (argv) alike.
set -euo pipefail
cd "$(dirname "$0")/.."
LIBVIRT_VERSION=11.3.0-2~bpo12+1
PACKAGES=(libvirt-daemon-system libvirt-clients libvirt-daemon libvirt-daemon-driver-qemu
    libvirt-daemon-log libvirt0)
QEMU_PACKAGES=(qemu-system-x86 qemu-utils qemu-system-common qemu-system-data qemu-block-extra)

log() { echo "setup-libvirt11: $*" >&2; }
installed_version() { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null |
    awk '$3 == "installed" {print $4}'; }

up_to_date() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        [ "$(installed_version "$pkg")" = "$LIBVIRT_VERSION" ] || return 1
    done
}

if [ "${1:-}" = "--check" ]; then
    up_to_date && { log "libvirt $LIBVIRT_VERSION installed"; exit 0; }
    log "libvirt $LIBVIRT_VERSION not installed"
    exit 1
fi
[ "$(id -u)" = 0 ] || { log "run as root"; exit 2; }

if ! up_to_date; then
    scripts/qemu10.sh >/dev/null # bookworm-backports in apt's sources (and QEMU 10 unpacked)
    if ! apt-cache policy libvirt-daemon-system | grep -qF "$LIBVIRT_VERSION"; then
        apt-get update -qq
    fi
    want=()
    for pkg in "${PACKAGES[@]}"; do want+=("$pkg=$LIBVIRT_VERSION"); done
    # QEMU stays bookworm's: name it explicitly only where it is missing
    for pkg in qemu-system-x86 qemu-utils; do
        [ -n "$(installed_version "$pkg")" ] || want+=("$pkg/bookworm")
    done
    apt_args=(-y --no-install-recommends -t bookworm-backports
        -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef)
    declare -A before
    for pkg in "${QEMU_PACKAGES[@]}"; do before[$pkg]=$(installed_version "$pkg"); done
    plan=$(apt-get install -s "${apt_args[@]}" "${want[@]}")
    # Inst lines name the package, then [old version] if any, then (new version release ...)
    qemu_plan=$(echo "$plan" | grep -E '^Inst (qemu|seabios|ipxe)' || true)
    if echo "$qemu_plan" | grep -q 'ackports'; then
        log "apt's plan would take QEMU packages from backports; refusing:"
        echo "$qemu_plan" >&2
        exit 1
    fi
    log "apt's plan (simulated): $(echo "$plan" | grep -c '^Inst') packages; QEMU: ${qemu_plan:-untouched}"
    log "installing ${want[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -qq "${apt_args[@]}" "${want[@]}" >&2
    for pkg in "${QEMU_PACKAGES[@]}"; do
        now=$(installed_version "$pkg")
        if [ -n "${before[$pkg]}" ] && [ "$now" != "${before[$pkg]}" ]; then
            log "$pkg changed from ${before[$pkg]} to ${now:-nothing}: not what was asked"
            exit 1
        fi
    done
    up_to_date || { log "libvirt $LIBVIRT_VERSION not installed after apt-get"; exit 1; }
    log "installed libvirt $LIBVIRT_VERSION; $(dpkg-query -W -f='${Package} ${Version}' qemu-system-x86)"
fi

# QEMU 10 for libvirt and snapcore alike: scripts/qemu10.sh's, with every module (see above)
scripts/qemu10.sh
