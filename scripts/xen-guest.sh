#!/usr/bin/env bash
# Run the Xen test suite (tests/xen, pytest -m xen) inside dom0 of a real Xen 4.17 host booted
# under QEMU TCG.
#
# Xen cannot run on this machine's kernel, but Debian 12's Xen hypervisor boots under
# `qemu-system-x86_64 -accel tcg -cpu qemu64,+svm` (the CPU Xen's own CI uses), with Debian's
# kernel as a PV dom0. The Debian packages (Xen hypervisor and tools, the qdisk QEMU, the kernel)
# are fetched with `apt-get download` at pinned versions into .cache/xen-guest/ (apt checks
# their hashes against the signed index; the harness checks them again on reuse) and unpacked
# there, never installed. dom0 boots from a self-contained initramfs: busybox, the unpacked Xen
# tree, qemu-img, this machine's Python with the .venv's snapcore and pytest (at the same
# paths, so the venv works unchanged), the repository's working tree, and a domU kernel and
# initramfs for the tests. dom0 needs nothing from this machine at run time (no 9p share): the
# suite's results come back on a raw virtio disk that dom0 writes as a tar archive.
#
#   scripts/xen-guest.sh [PYTEST ARGS...]   prepare (if needed), boot once, run the suite
#   scripts/xen-guest.sh --prepare          only fetch, check and unpack the packages
#   scripts/xen-guest.sh --exec 'COMMAND'   boot and run COMMAND in dom0 (sh -c) instead
#
# SNAPCORE_XEN_FULL=1 adds the slow tests (a minute of libxl's suspend timeout);
# SNAPCORE_XEN_GUEST_TIMEOUT bounds the whole guest run (1200 s).
#
# Exits 0 only when dom0 ran at least one test and none failed. Prints the boot time (QEMU
# start to dom0 ready, with xenstored and xenconsoled running) and the suite's time.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV=$REPO/.venv
CACHE=$REPO/.cache/xen-guest
DEBS=$CACHE/debs
XROOT=$CACHE/xenroot
KROOT=$CACHE/kroot
RUN=$CACHE/run
OUT=$CACHE/out
GUEST_TIMEOUT=${SNAPCORE_XEN_GUEST_TIMEOUT:-1200}
KVER=6.1.0-57-amd64
XEN_VERSION=4.17.7+13-g2445b30a44-0+deb12u1
# The pinned packages: the hypervisor, xl and libxl with the libraries they load, the qdisk
# QEMU, and the kernel that boots as dom0 and as the test domains.
PINS=(
    "xen-hypervisor-4.17-amd64=$XEN_VERSION"
    "xen-utils-4.17=$XEN_VERSION"
    "xen-utils-common=$XEN_VERSION"
    "xenstore-utils=$XEN_VERSION"
    "libxenmisc4.17=$XEN_VERSION"
    "libxenstore4=$XEN_VERSION"
    "libxencall1=$XEN_VERSION"
    "libxendevicemodel1=$XEN_VERSION"
    "libxenevtchn1=$XEN_VERSION"
    "libxenforeignmemory1=$XEN_VERSION"
    "libxengnttab1=$XEN_VERSION"
    "libxentoolcore1=$XEN_VERSION"
    "libxentoollog1=$XEN_VERSION"
    "libxenhypfs1=$XEN_VERSION"
    "libyajl2=2.1.0-3+deb12u2"
    "qemu-system-xen=1:7.2+dfsg-7+deb12u18+b3"
    "linux-image-$KVER=6.1.192-3"
)
# Kernel modules dom0 loads (Xen devices, the virtio results disk) and the domU initramfs's.
DOM0_MODULES=(xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs virtio_pci virtio_blk loop)
DOMU_MODULES=(xen-blkfront)
# Tools from this machine copied into dom0 (with the libraries they load), and data files: the
# qdisk QEMU will not start without its keymaps (qemu-system-data, installed with qemu here).
HOST_TOOLS=(/usr/bin/qemu-img /usr/bin/qemu-io)
HOST_DATA=(/usr/share/qemu/keymaps)

log() { echo "xen-guest: $*" >&2; }
die() {
    log "$*"
    log "FAILED"
    exit 1
}

# -- packages -------------------------------------------------------------------------------

# The .deb file apt-get download writes for NAME=VERSION (the epoch's colon as %3a).
deb_file() {
    local name=${1%%=*} version=${1#*=}
    ls "$DEBS/${name}_${version//:/%3a}_"*.deb 2>/dev/null | head -1 || true
}

# The SHA256 apt's index gives for NAME=VERSION (empty if the index does not have it).
index_sha256() {
    apt-cache show "$1" 2>/dev/null | awk '/^SHA256:/ {print $2; exit}'
}

fetch_packages() {
    mkdir -p "$DEBS"
    local pin deb sum updated=0 missing=()
    for pin in "${PINS[@]}"; do
        [ -n "$(deb_file "$pin")" ] || missing+=("$pin")
    done
    if ((${#missing[@]})); then
        if [ -z "$(index_sha256 "${missing[0]}")" ]; then
            apt-get update -qq
            updated=1
        fi
        local get=()
        for pin in "${missing[@]}"; do
            if [ -z "$(index_sha256 "$pin")" ]; then
                # Debian keeps only the newest version of a package in bookworm: a pinned
                # version superseded by a point release is gone. Use the new one, loudly.
                local candidate
                candidate=$(apt-cache policy "${pin%%=*}" | awk '/Candidate:/ {print $2}')
                [ -n "$candidate" ] && [ "$candidate" != "(none)" ] ||
                    die "package ${pin%%=*} is not in apt's index (updated: $updated)"
                log "WARNING: pinned $pin is not in apt's index; using ${pin%%=*}=$candidate"
                PINS=("${PINS[@]/$pin/${pin%%=*}=$candidate}")
                pin=${pin%%=*}=$candidate
                [ -z "$(deb_file "$pin")" ] || continue
            fi
            get+=("$pin")
        done
        if ((${#get[@]})); then
            log "downloading ${#get[@]} packages into .cache/xen-guest/debs"
            (cd "$DEBS" && apt-get download -qq "${get[@]}" 2>&1 |
                grep -v "^W: Download is performed unsandboxed" >&2 || true)
        fi
    fi
    # apt-get download checks each file against the signed index; the recorded sums check
    # the cache on reuse (the index may no longer list a pinned version).
    touch "$DEBS/SHA256SUMS"
    for pin in "${PINS[@]}"; do
        deb=$(deb_file "$pin")
        [ -n "$deb" ] || die "apt-get download $pin failed"
        if ! grep -q " ${deb##*/}\$" "$DEBS/SHA256SUMS"; then
            sum=$(index_sha256 "$pin")
            [ -n "$sum" ] || die "cannot check ${deb##*/}: $pin is not in apt's index"
            echo "$sum  ${deb##*/}" >>"$DEBS/SHA256SUMS"
        fi
    done
    (cd "$DEBS" && sha256sum --quiet -c SHA256SUMS) || die "checksum mismatch in $DEBS"
    log "packages (sha256 checked): ${PINS[*]}"
}

# Unpack the packages: the Xen ones into xenroot/, the kernel into kroot/ (with modules.dep,
# which the package leaves to its postinst). Merged /usr: top-level bin, sbin, lib move under
# usr/ as on this machine.
unpack_packages() {
    local key
    key=$(cat "$DEBS/SHA256SUMS" | sort | sha256sum | cut -c1-16)
    if [ -f "$XROOT/.complete" ] && [ "$(cat "$XROOT/.complete")" = "$key" ] &&
        [ -f "$KROOT/.complete" ]; then
        return
    fi
    log "unpacking the packages"
    rm -rf "$XROOT" "$KROOT"
    mkdir -p "$XROOT" "$KROOT"
    local pin deb dir d
    for pin in "${PINS[@]}"; do
        deb=$(deb_file "$pin")
        case $pin in linux-image-*) dir=$KROOT ;; *) dir=$XROOT ;; esac
        dpkg-deb -x "$deb" "$dir"
    done
    for dir in "$XROOT" "$KROOT"; do
        for d in bin sbin lib lib64; do
            if [ -d "$dir/$d" ] && [ ! -L "$dir/$d" ]; then
                mkdir -p "$dir/usr/$d"
                cp -a "$dir/$d/." "$dir/usr/$d/"
                rm -rf "${dir:?}/$d"
            fi
        done
    done
    depmod -b "$KROOT/usr" "$KVER" 2>/dev/null || depmod -b "$KROOT" "$KVER"
    gunzip -c "$XROOT"/boot/xen-4.17-amd64.gz >"$CACHE/xen.elf"
    touch "$KROOT/.complete"
    echo "$key" >"$XROOT/.complete"
}

# -- the dom0 initramfs ---------------------------------------------------------------------

# Print every library FILE... loads (resolved against the unpacked Xen tree first).
libraries() {
    local f
    for f in "$@"; do
        LD_LIBRARY_PATH=$XROOT/usr/lib/x86_64-linux-gnu ldd "$f" 2>/dev/null |
            awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}'
    done | sort -u
}

# Copy host path P (a file or a symlink, with its target) into the staging root at the same path.
stage_copy() {
    local p
    for p in "$@"; do
        [ -e "$p" ] || continue
        mkdir -p "$STAGE$(dirname "$p")"
        cp -a "$p" "$STAGE$p"
        if [ -L "$p" ]; then
            # the link's target, one step at a time (it may be a link again)
            local target
            target=$(readlink "$p")
            case $target in /*) ;; *) target=$(dirname "$p")/$target ;; esac
            stage_copy "$(realpath -s "$target")"
        fi
    done
}

# Copy kernel module NAME and what it depends on from kroot into DEST (a root), then depmod.
stage_modules() {
    local dest=$1 m f rel
    shift
    for m in "$@"; do
        for f in $(modprobe -d "$KROOT/usr" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'); do
            rel=${f#*/lib/modules/$KVER/}
            mkdir -p "$dest/usr/lib/modules/$KVER/$(dirname "$rel")"
            cp "$f" "$dest/usr/lib/modules/$KVER/$rel"
        done
    done
    cp "$KROOT/usr/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$dest/usr/lib/modules/$KVER/"
    depmod -b "$dest/usr" "$KVER"
}

merged_root() {
    mkdir -p "$1"/usr/{bin,sbin,lib,lib64} "$1"/{dev,proc,sys,tmp,run,etc,root,var,mnt}
    ln -s usr/bin "$1/bin"
    ln -s usr/sbin "$1/sbin"
    ln -s usr/lib "$1/lib"
    ln -s usr/lib64 "$1/lib64"
    cp /bin/busybox "$1/usr/bin/busybox"
}

# The domU initramfs: busybox, xen-blkfront, and an init that prints a heartbeat counter on its
# console every second (the tests read it from xenconsoled's log: after a revert with memory the
# count goes back) and writes it into the second sector of each of its disks (flushed), so a
# revert shows which disk state goes with which memory.
build_domu_initrd() {
    local d=$CACHE/build/domU
    rm -rf "$d"
    merged_root "$d"
    stage_modules "$d" "${DOMU_MODULES[@]}"
    cat >"$d/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
modprobe xen-blkfront 2>/dev/null
i=0
while [ $i -lt 20 ] && [ ! -b /dev/xvda ]; do sleep 0.2; i=$((i + 1)); done
echo "[domU] up $(cut -d' ' -f1 /proc/uptime)s disks: $(ls /sys/block | tr '\n' ' ')"
# what the disks hold in their second sector when the guest starts (the count an earlier run
# wrote, or zeros): the tests compare it with what dom0 wrote before the domain started
for d in /dev/xvd?; do
    [ -b "$d" ] || continue
    s=$(dd if="$d" bs=512 skip=1 count=1 2>/dev/null | head -c 13 | tr -d '\000')
    echo "[domU] found $d: ${s:-zeros}"
done
i=0
while true; do
    i=$((i + 1))
    for d in /dev/xvd?; do
        [ -b "$d" ] && printf 'beat %08d\n' $i | dd of="$d" bs=512 seek=1 conv=sync,fsync 2>/dev/null
    done
    echo "[domU] heartbeat $i"
    sleep 1
done
EOF
    chmod +x "$d/init"
    (cd "$d" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$CACHE/build/domU-initrd.gz"
}

# Print the host paths of the .venv that dom0 needs: its interpreter links and config, and
# the files of snapcore, pytest and what they require (from their metadata).
venv_files() {
    "$VENV/bin/python" - "$VENV" <<'EOF'
import importlib.metadata as md
import os
import sys

from packaging.requirements import Requirement

venv = sys.argv[1]
print(os.path.join(venv, "pyvenv.cfg"))
for name in os.listdir(os.path.join(venv, "bin")):
    if name.startswith("python"):
        print(os.path.join(venv, "bin", name))
todo, seen = ["snapcore", "pytest"], set()
while todo:
    name = todo.pop()
    dist = md.distribution(name)
    key = dist.metadata["Name"].lower().replace("_", "-")
    if key in seen:
        continue
    seen.add(key)
    for req in dist.requires or []:
        r = Requirement(req)
        if r.marker is None or r.marker.evaluate({"extra": ""}):
            todo.append(r.name)
    for f in dist.files or []:
        path = os.path.realpath(dist.locate_file(f))
        if path.startswith(venv + "/") and "__pycache__" not in path:
            print(path)
EOF
}

build_base() {
    STAGE=$CACHE/build/base
    rm -rf "$STAGE"
    merged_root "$STAGE"
    # the Xen tree (no docs, no hypervisor image, no modules)
    (cd "$XROOT" && tar cf - --exclude=./usr/share/doc --exclude=./usr/share/man \
        --exclude=./usr/share/locale --exclude=./boot --exclude=./.complete .) | (cd "$STAGE" && tar xf -)
    stage_modules "$STAGE" "${DOM0_MODULES[@]}"
    # Python: the interpreter the .venv runs on, its standard library (without its tests,
    # Tk, IDLE or site-packages) and the .venv's snapcore + pytest, at their paths here
    local exe stdlib
    exe=$(realpath "$("$VENV/bin/python" -c 'import sys; print(sys._base_executable)')")
    stdlib=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
    stage_copy "$exe"
    mkdir -p "$STAGE$stdlib"
    (cd "$stdlib" && tar cf - --exclude=./site-packages --exclude=./dist-packages --exclude=./test \
        --exclude=./idlelib --exclude=./tkinter --exclude=./turtledemo --exclude=./ensurepip \
        --exclude=./lib2to3 --exclude='./config-*' --exclude='*/tests' --exclude='*.opt-1.pyc' \
        --exclude='*.opt-2.pyc' --exclude='./lib-dynload/_test*' --exclude='./lib-dynload/_tkinter*' \
        --exclude='./lib-dynload/_ctypes_test*' --exclude='./lib-dynload/xx*' --exclude='./lib-dynload/_xx*' \
        .) | (cd "$STAGE$stdlib" && tar xf -)
    local files
    mapfile -t files < <(venv_files)
    stage_copy "${files[@]}"
    stage_copy "${HOST_TOOLS[@]}" "${HOST_DATA[@]}"
    # every library of those programs and Python's extension modules
    local progs
    mapfile -t progs < <(find "$STAGE" -type f \( -perm -u+x -o -name '*.so*' \) \
        \( -path '*/bin/*' -o -path '*/libexec/*' -o -path '*/lib-dynload/*' -o -path '*/site-packages/*' \) \
        ! -name '*.py' | while read -r f; do
        [ "$(head -c 4 "$f" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] && echo "${f#"$STAGE"}"
    done)
    local lib
    for lib in $(cd / && libraries "${progs[@]/#/$STAGE}" "$exe" "${HOST_TOOLS[@]}"); do
        case $lib in
            "$XROOT"/*) ;;
            *) [ -e "$STAGE$lib" ] || stage_copy "$lib" ;;
        esac
    done
    # debug symbols are most of some libraries (libpython): strip them where strip is installed
    if command -v strip >/dev/null; then
        find "$STAGE" -type f -name '*.so*' -exec strip --strip-debug {} + 2>/dev/null || true
    fi
    cp -a /etc/ld.so.conf /etc/ld.so.conf.d "$STAGE/etc/" 2>/dev/null || true
    ldconfig -r "$STAGE"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$STAGE/etc/passwd"
    printf 'root:x:0:\n' >"$STAGE/etc/group"
    # the test domains' kernel and initramfs
    mkdir -p "$STAGE/opt/xen-guest"
    cp "$KROOT/boot/vmlinuz-$KVER" "$STAGE/opt/xen-guest/vmlinuz"
    cp "$CACHE/build/domU-initrd.gz" "$STAGE/opt/xen-guest/domU-initrd.gz"
    write_init >"$STAGE/init"
    chmod +x "$STAGE/init"
    "$exe" -m compileall -q -j 2 -s "$STAGE" -p / "$STAGE$VENV" >/dev/null || true
    (cd "$STAGE" && find . ! -name . | busybox cpio -o -H newc 2>/dev/null) >"$CACHE/base.cpio"
}

# dom0's PID 1 (busybox sh): start the Xen services, run the suite (or the --exec command),
# write the results to the virtio disk as a tar archive, power off.
write_init() {
    cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/lib/xen-4.17/bin:/usr/bin:/usr/sbin HOME=/root LC_ALL=C.UTF-8
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
. /xen-guest.env; export REPO SNAPCORE_XEN_FULL
# /tmp is a tmpfs of its own, unless the repository's copy is under it (a checkout in /tmp)
mount -t tmpfs tmpfs /run; ln -sfn /run /var/run
case $REPO/ in /tmp/*) ;; *) mount -t tmpfs -o size=1g tmpfs /tmp ;; esac
say() { echo "xen-guest-dom0: [$(cut -d' ' -f1 /proc/uptime)s] $*"; }
say "dom0 userspace up, kernel $(uname -r)"
mkdir -p /run/xen /run/xenstored /var/lib/xen /var/log/xen/console /var/lib/xenstored /out
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs virtio_pci virtio_blk loop; do
    modprobe $m || say "modprobe $m failed"
done
mount -t xenfs xenfs /proc/xen
xenstored --pid-file=/run/xenstored.pid
xen-init-dom0 >/out/xen-init-dom0.log 2>&1 || say "xen-init-dom0 failed"
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
say "ready: $(xl info | grep -E '^xen_version') $(xl info | grep -E '^virt_caps' | tr -s ' ')"
eval "set -- $PYTEST_ARGS"
cd "$REPO"
start=$(cut -d' ' -f1 /proc/uptime)
if [ -n "$EXEC" ]; then
    { sh -c "$EXEC"; echo $? >/out/rc; } 2>&1 | tee /out/exec.log
else
    { env SNAPCORE_XEN_GUEST=1 SNAPCORE_XEN_RESULTS=/out PYTHONDONTWRITEBYTECODE=1 \
        "$REPO/.venv/bin/python" -m pytest tests/xen -m xen -v --durations=0 -p no:cacheprovider \
        --junitxml=/out/junit.xml "$@"; echo $? >/out/rc; } 2>&1 | tee /out/pytest.log
fi
end=$(cut -d' ' -f1 /proc/uptime)
say "suite done: exit status $(cat /out/rc) in $(awk "BEGIN {print $end - $start}") s"
echo "$start $end" >/out/times
xl list >/out/xl-list.txt 2>&1
xl dmesg >/out/xl-dmesg.txt 2>&1
cp -r /var/log/xen /out/xenlogs 2>/dev/null
(cd /out && tar cf /dev/vda .) && sync
say "results written"
echo o >/proc/sysrq-trigger; sleep 5; poweroff -f
EOF
}

# The per-run part: the repository's working tree (at its path here) and the run's settings.
build_run() {
    STAGE=$RUN/stage
    rm -rf "$STAGE"
    mkdir -p "$STAGE$REPO"
    (cd "$REPO" && tar cf - --exclude=__pycache__ --exclude='*.pyc' pyproject.toml snapcore backends tests benchmarks/xen_checkpoint.py) |
        (cd "$STAGE$REPO" && tar xf -)
    "$VENV/bin/python" -m compileall -q -j 2 -s "$STAGE" -p / "$STAGE$REPO/snapcore" "$STAGE$REPO/backends" >/dev/null || true
    {
        printf 'REPO=%q\n' "$REPO"
        printf 'EXEC=%q\n' "$EXEC"
        printf 'PYTEST_ARGS=%q\n' "$PYTEST_ARGS"
        printf 'SNAPCORE_XEN_FULL=%q\n' "${SNAPCORE_XEN_FULL:-}"
    } >"$STAGE/xen-guest.env"
    (cd "$STAGE" && find . ! -name . | busybox cpio -o -H newc 2>/dev/null) >"$RUN/run.cpio"
}

prepare() {
    [ -x "$VENV/bin/python" ] || {
        log "no $VENV: run scripts/setup.sh first"
        exit 2
    }
    fetch_packages
    unpack_packages
    local key
    key=$({
        cat "$DEBS/SHA256SUMS"
        cat "$0"
        "$VENV/bin/python" -c 'import sys; print(sys.version, sys._base_executable)'
        "$VENV/bin/python" -m pip list --disable-pip-version-check 2>/dev/null
    } | sha256sum | cut -c1-16)
    if [ ! -f "$CACHE/base.cpio" ] || [ "$(cat "$CACHE/base.key" 2>/dev/null)" != "$key" ]; then
        log "building the dom0 initramfs"
        mkdir -p "$CACHE/build"
        build_domu_initrd
        build_base
        echo "$key" >"$CACHE/base.key"
        rm -rf "$CACHE/build"
    fi
}

# Print the tests, failures, errors and skipped counts of a JUnit report.
junit_counts() {
    "$VENV/bin/python" - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
total = [sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")]
print(*total)
EOF
}

# -- on this machine ------------------------------------------------------------------------

# Everything runs from main, which bash reads whole before it starts: editing this file while
# a guest runs does not change the run.
main() {

    EXEC=""
    PYTEST_ARGS=""
    mode=pytest
    case "${1:-}" in
        --prepare) mode=prepare ;;
        --exec)
            mode=exec
            EXEC=${2:?--exec needs a command}
            ;;
        *) if (($#)); then PYTEST_ARGS=$(printf '%q ' "$@"); fi ;;
    esac
    t0=$(date +%s)
    prepare
    log "ready in $(($(date +%s) - t0)) s: Xen $XEN_VERSION, dom0 and domU kernel $KVER, $(du -h "$CACHE/base.cpio" | cut -f1) initramfs"
    [ "$mode" != prepare ] || exit 0

    rm -rf "$OUT" "$RUN"
    mkdir -p "$OUT" "$RUN"
    build_run
    cat "$CACHE/base.cpio" "$RUN/run.cpio" >"$RUN/dom0.cpio"
    truncate -s 64M "$RUN/results.img"
    log "booting Xen under TCG (qemu64,+svm, 2 CPUs, 3 GiB; dom0 1.5 GiB), at most $GUEST_TIMEOUT s"
    start=$(date +%s.%N)
    ready=""
    set +e
    timeout -k 5 "$GUEST_TIMEOUT" qemu-system-x86_64 -accel tcg -M pc -cpu qemu64,+svm -smp 2 -m 3072 \
        -display none -vga none -no-reboot -monitor none -parallel none -nic none \
        -serial file:/dev/stdout \
        -kernel "$CACHE/xen.elf" \
        -append "console=com1 com1=115200,8n1 dom0_mem=1536M,max:1536M dom0_max_vcpus=2 noreboot" \
        -initrd "$KROOT/boot/vmlinuz-$KVER console=hvc0 earlyprintk=xen loglevel=4 rdinit=/init,$RUN/dom0.cpio" \
        -drive "file=$RUN/results.img,format=raw,if=virtio" </dev/null 2>&1 |
        while IFS= read -r line; do
            line=${line%$'\r'}
            printf '%s\n' "$line" >>"$RUN/serial.log"
            printf '%s\n' "$line"
            case $line in
                *"xen-guest-dom0: "*"ready: "*) echo "$(date +%s.%N)" >"$RUN/ready" ;;
            esac
        done
    qemu_rc=${PIPESTATUS[0]}
    set -e
    end=$(date +%s.%N)
    total=$(awk "BEGIN {printf \"%.0f\", $end - $start}")
    [ -f "$RUN/ready" ] && ready=$(awk "BEGIN {printf \"%.1f\", $(cat "$RUN/ready") - $start}")
    log "guest finished after $total s (qemu exit status $qemu_rc); dom0 ready ${ready:-never} s after QEMU started"
    tar xf "$RUN/results.img" -C "$OUT" 2>/dev/null || true
    if [ -f "$OUT/times" ]; then
        read -r s e <"$OUT/times"
        log "suite time: $(awk "BEGIN {printf \"%.1f\", $e - $s}") s (dom0 clock)"
    fi

    if [ "$mode" = exec ]; then
        [ -f "$OUT/rc" ] || die "the command did not run in dom0"
        exit "$(cat "$OUT/rc")"
    fi
    if [ ! -f "$OUT/rc" ] || [ ! -f "$OUT/junit.xml" ]; then
        log "guest pytest: no result (see .cache/xen-guest/run/serial.log)"
        log "FAILED"
        exit 1
    fi
    rc=$(cat "$OUT/rc")
    read -r tests failures errors skipped < <(junit_counts "$OUT/junit.xml")
    ran=$((tests - skipped))
    if [ -f "$OUT/measurements.md" ]; then
        cat "$OUT/measurements.md"
    fi
    log "guest pytest: exit status $rc, $ran run, $failures failed, $errors errors, $skipped skipped"
    if [ "$rc" != 0 ] || [ "$failures" != 0 ] || [ "$errors" != 0 ] || [ "$ran" -le 0 ]; then
        log "FAILED"
        exit 1
    fi
    log "passed"
}

main "$@"; exit
