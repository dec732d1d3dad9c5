#!/bin/sh
# Record what the real xl 4.17 prints, and its exit statuses, for the commands the xen plugin
# and the stand-in tests/standins/xl use. Runs in dom0 of the Xen guest:
#   scripts/xen-guest.sh --exec 'sh tests/xen/record.sh'
# Each command's stdout, stderr and exit status go to .cache/xen-guest/out/record/NN-NAME.*
# (compare them with the stand-in's; docs/xen.md lists the differences).
OUT=/out/record
W=/tmp/record
mkdir -p "$OUT" "$W"
n=0
rec() { # NAME COMMAND...
    name=$1
    shift
    n=$((n + 1))
    f=$OUT/$(printf '%02d' $n)-$name
    echo "$*" >"$f.argv"
    t0=$(cut -d' ' -f1 /proc/uptime)
    timeout 120 "$@" >"$f.out" 2>"$f.err"
    echo $? >"$f.rc"
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "record: $name: rc $(cat "$f.rc") in $(awk "BEGIN {print $t1 - $t0}") s: $*"
    if [ "$(cat "$f.rc")" != 0 ]; then
        grep -v 'xc: progress' "$f.err" | tail -8 | sed 's/^/record:    /'
    fi
}
qemu-img create -q -f qcow2 "$W/a.qcow2" 64M
qemu-img create -q -f qcow2 "$W/b.qcow2" 64M
cat >"$W/rec1.cfg" <<CFG
name = "rec1"
type = "pv"
kernel = "/opt/xen-guest/vmlinuz"
ramdisk = "/opt/xen-guest/domU-initrd.gz"
extra = "console=hvc0 loglevel=4"
memory = 128
vcpus = 1
disk = [ "format=qcow2,vdev=xvda,access=rw,backendtype=qdisk,target=$W/a.qcow2",
         "format=qcow2,vdev=xvdb,access=rw,backendtype=qdisk,target=$W/b.qcow2" ]
on_crash = "preserve"
CFG
rec list-missing xl list nosuch
rec list-l-missing xl list -l nosuch
rec pause-missing xl pause nosuch
rec unpause-missing xl unpause nosuch
rec destroy-missing xl destroy nosuch
rec save-missing xl save -p nosuch "$W/x.save"
rec domid-missing xl domid nosuch
rec create xl create "$W/rec1.cfg"
sleep 5
rec list xl list
rec list-name xl list rec1
rec list-l xl list -l rec1
rec list-l-all xl list -l
rec domid xl domid rec1
ls -la /run/xen >"$OUT/run-xen.txt" 2>&1
rec pause xl pause rec1
rec list-paused xl list rec1
rec pause-again xl pause rec1
rec unpause-once xl unpause rec1
rec list-after-one-unpause xl list rec1
rec unpause-again xl unpause rec1
rec list-running xl list rec1
rec save-p xl save -p rec1 "$W/m.save"
ls -la "$W" >"$OUT/after-save.txt"
rec list-after-save-p xl list rec1
rec destroy xl destroy rec1
rec list-after-destroy xl list rec1
rec restore-p xl restore -p "$W/m.save"
rec list-restored-paused xl list rec1
ls -la /run/xen >"$OUT/run-xen-restored.txt" 2>&1
rec restore-again xl restore "$W/m.save"
rec unpause-restored xl unpause rec1
sleep 3
rec save-c xl save -c rec1 "$W/c.save"
rec list-after-save-c xl list rec1
rec save-plain xl save rec1 "$W/d.save"
rec list-after-save-plain xl list rec1
rec restore xl restore "$W/d.save"
rec list-restored xl list rec1
rec restore-bad xl restore "$W/a.qcow2"
rec restore-nofile xl restore "$W/nothere.save"
rec pause-for-save xl pause rec1
rec save-paused-pv xl save -p rec1 "$W/p.save"
rec list-after-save-paused xl list rec1
rec destroy-end xl destroy rec1
rec list-end xl list
cp /var/log/xen/console/guest-rec1.log "$OUT/" 2>/dev/null
tail -5 /var/log/xen/qemu-dm-rec1.log* | sed 's/^/record: qemu-dm: /'
ls /var/log/xen >"$OUT/var-log-xen.txt"
echo "record: done"
