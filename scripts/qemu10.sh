#!/usr/bin/env bash
# Fetch QEMU 10.0 from Debian's bookworm-backports and unpack it into .cache/qemu10/, beside the
# system's QEMU 7.2, which stays as it is (nothing is installed but the shared libraries QEMU 10
# loads, all from bookworm itself).
#
#   scripts/qemu10.sh            prepare (if needed) and print the wrapper's path
#   scripts/qemu10.sh --check    also start it once and print its version
#
# The packages are fetched with `apt-get download` at pinned versions (apt checks them against
# the signed index; bookworm-backports is added to apt's sources if missing: Debian gives
# backports priority 100, so nothing is ever upgraded from it without asking) and unpacked,
# never installed. .cache/qemu10/bin/qemu-system-x86_64 is a wrapper that runs the unpacked
# binary with its own firmware (-L) and module directory (QEMU_MODULE_DIR): it is the binary
# to name in a domain file's argv, or in SNAPCORE_TEST_QEMU for the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=$(pwd)/.cache/qemu10
DEBS=$CACHE/debs
ROOT=$CACHE/root
BIN=$CACHE/bin
QEMU_VERSION=1:10.0.2+ds-2+deb13u1~bpo12+1
PINS=(
    "qemu-system-x86=$QEMU_VERSION"
    "qemu-system-common=$QEMU_VERSION"
    "qemu-system-data=$QEMU_VERSION"
    "qemu-utils=$QEMU_VERSION"
    "seabios=1.16.3-2~bpo12+1"
    # QEMU's optional modules: without them, QEMU 10 looks for a module it lacks in the system's
    # module directory, finds QEMU 7.2's, refuses it ("Only modules from the same build can be
    # loaded") and aborts on an assertion: `-device help` and libvirt's capability probe, which
    # list every device type, die. Their libraries need not be installed: a module that cannot
    # be opened is left out quietly.
    "qemu-system-modules-opengl=$QEMU_VERSION"
    "qemu-system-modules-spice=$QEMU_VERSION"
    "qemu-system-gui=$QEMU_VERSION"
)
# What qemu-system-x86 10.0 and qemu-utils load that a bookworm machine with QEMU 7.2 may lack
# (their Depends, all satisfied by bookworm's own versions).
LIBS=(libaio1 libbpf1 libcapstone4 libfdt1 libfuse3-3 libibverbs1 libjpeg62-turbo libnuma1
    libpixman-1-0 libpmem1 libpng16-16 librdmacm1 libsasl2-2 libseccomp2 libslirp0 liburing2
    libvdeplug2 libzstd1 libcacard0 libusbredirparser1 libbrlapi0.8 libcap-ng0 libusb-1.0-0
    libasound2)
BACKPORTS=/etc/apt/sources.list.d/snapcore-bookworm-backports.sources

log() { echo "qemu10: $*" >&2; }

stamp="$CACHE/.unpacked-$(echo "${PINS[*]}" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    if ! apt-cache policy | grep -q "bookworm-backports"; then
        log "adding bookworm-backports to apt's sources ($BACKPORTS)"
        cat >"$BACKPORTS" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        apt-get update -qq
    fi
    missing=()
    for pkg in "${LIBS[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "installing libraries from bookworm: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -t bookworm "${missing[@]}" >/dev/null
    fi
    rm -rf "$DEBS" "$ROOT"
    mkdir -p "$DEBS" "$ROOT" "$BIN"
    log "downloading ${PINS[*]}"
    (cd "$DEBS" && apt-get download -qq "${PINS[@]}" 2>&1 |
        grep -v "^W: Download is performed unsandboxed" >&2 || true)
    for deb in "$DEBS"/*.deb; do
        dpkg-deb -x "$deb" "$ROOT"
    done
    # QEMU 10 looks for its firmware in qemu-system-data's directory, whose files are links
    # to /usr/share/seabios and friends: make them point into the unpacked tree instead.
    for link in "$ROOT"/usr/share/qemu/*; do
        target=$(readlink "$link" || true)
        case "$target" in
        /usr/share/*) [ -e "$ROOT$target" ] && ln -sfn "$ROOT$target" "$link" ;;
        esac
    done
    for tool in qemu-system-x86_64:qemu-system-x86_64 qemu-img:qemu-img qemu-io:qemu-io; do
        name=${tool%%:*}
        cat >"$BIN/$name" <<EOF
#!/bin/sh
# QEMU $QEMU_VERSION from bookworm-backports, unpacked by scripts/qemu10.sh
export QEMU_MODULE_DIR=$ROOT/usr/lib/x86_64-linux-gnu/qemu
exec $ROOT/usr/bin/$name $([ "$name" = qemu-system-x86_64 ] && echo "-L $ROOT/usr/share/qemu") "\$@"
EOF
        chmod +x "$BIN/$name"
    done
    touch "$stamp"
fi
if [ "${1:-}" = "--check" ]; then
    log "$("$BIN/qemu-system-x86_64" --version | head -1)"
    # every device type listed: every module loads, or QEMU aborts (see the modules above)
    # (a module whose libraries are not installed says so on stderr and is left out: quiet)
    if ! out=$("$BIN/qemu-system-x86_64" -nodefaults -machine none -device help 2>&1); then
        log "QEMU 10 cannot list its devices:"
        echo "$out" | tail -5 >&2
        exit 1
    fi
    log "$("$BIN/qemu-img" --version | head -1)"
fi
echo "$BIN/qemu-system-x86_64"
