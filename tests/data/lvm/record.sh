#!/usr/bin/env bash
# Record the LVM output the unit tests (tests/backends/test_lvm_*.py) replay.
#
# Runs inside the virtme-ng guest:   scripts/lvm-guest.sh --exec 'bash tests/data/lvm/record.sh'
# and writes NAME.out / NAME.err / NAME.rc into $SNAPCORE_LVM_RESULTS (.cache/lvm-guest/);
# copy them into tests/data/lvm/ to update the recordings. Every lvs call uses the field list
# and options of snapcore_lvm.lvm (LV_FIELDS, --units b --nosuffix --binary).
set -u
O=${SNAPCORE_LVM_RESULTS:?run this inside the guest}
F=lv_name,vg_name,lv_uuid,lv_attr,lv_size,segtype,origin,pool_lv,lv_tags,data_percent,metadata_percent,snap_percent,lv_device_open,lv_merging,lv_snapshot_invalid,vg_extent_size,vg_free_count
LVS=(lvs --reportformat json --units b --nosuffix --binary)
cap() {
    local name=$1
    shift
    "$@" >"$O/$name.out" 2>"$O/$name.err"
    echo $? >"$O/$name.rc"
}
q() { "$@" >/dev/null 2>&1 || echo "record: failed: $*" >&2; }

truncate -s 1G /dev/shm/rec0.img
truncate -s 41M /dev/shm/rec1.img
L0=$(losetup --find --show /dev/shm/rec0.img)
L1=$(losetup --find --show /dev/shm/rec1.img)
q pvcreate "$L0" "$L1"
q vgcreate vg0 "$L0"
q vgcreate small "$L1"

# vg0: classic web with snapcore's snapshot and someone else's, a thin pool, thin db with one
q lvcreate -y -L 64M -n web vg0
q dd if=/dev/urandom of=/dev/vg0/web bs=1M count=64 oflag=direct
q lvcreate --snapshot --name web+c1 --extents 100%ORIGIN --permission r --addtag snapcore vg0/web
q lvcreate --snapshot --name manual --size 8M vg0/web
q lvcreate -y -L 256M --thinpool pool vg0
q lvcreate -V 64M --thin vg0/pool -n db
q dd if=/dev/urandom of=/dev/vg0/db bs=1M count=16 oflag=direct
q lvcreate --snapshot --name db+c1 --permission r --setactivationskip y --addtag snapcore vg0/db
cap lvs_vg0 "${LVS[@]}" --all --options "$F" vg0
cap lvs_web "${LVS[@]}" --options "$F" vg0/web
cap lvs_no_vg "${LVS[@]}" --all --options "$F" novg
cap lvs_no_lv "${LVS[@]}" --options "$F" vg0/nolv
cap lvcreate_classic lvcreate --snapshot --name web+c2 --extents 100%ORIGIN --permission r --addtag snapcore vg0/web
cap lvcreate_thin lvcreate --snapshot --name db+c2 --permission r --setactivationskip y --addtag snapcore vg0/db
cap lvcreate_exists lvcreate --snapshot --name web+c2 --extents 100%ORIGIN --permission r --addtag snapcore vg0/web

# a merge put off because the origin is open, then started once it is closed
q lvchange --addtag "snapcore_merge=c2=$(lvs --noheadings -o lv_uuid vg0/web+c2 | tr -d ' ')" vg0/web
exec 3<>/dev/vg0/web
cap lvconvert_deferred lvconvert --merge --yes --interval 1 vg0/web+c2
cap lvs_web_merge_pending "${LVS[@]}" --options "$F" vg0/web
cap lvs_vg0_merge_pending "${LVS[@]}" --all --options "$F" vg0
exec 3>&-
cap lvchange_refresh lvchange --refresh vg0/web
sleep 3
cap lvs_vg0_merged "${LVS[@]}" --all --options "$F" vg0
q lvchange --deltag "snapcore_merge=c2=$(lvs --noheadings -o lv_tags vg0/web | tr -d ' ' | sed 's/.*=//')" vg0/web
q lvcreate --snapshot --name web+c3 --extents 100%ORIGIN --permission r --addtag snapcore vg0/web
cap lvconvert_done lvconvert --merge --yes --interval 1 vg0/web+c3

# a thin revert cut short between its renames
q lvcreate --snapshot --name db+.revert --permission rw --setactivationskip n --activate y vg0/db+c1
q lvrename vg0 db db+.old
cap lvs_vg0_thin_interrupted "${LVS[@]}" --all --options "$F" vg0

# small: ten extents; an overflowed classic snapshot; a nearly full thin pool
q lvcreate -y -L 16M -n ov small
q lvcreate --snapshot --name ov+c1 --size 4M --permission r --addtag snapcore small/ov
q dd if=/dev/urandom of=/dev/small/ov bs=1M count=16 oflag=direct
q lvcreate -y -L 8M --thinpool tp small
q lvcreate -V 32M --thin small/tp -n t1
q dd if=/dev/urandom of=/dev/small/t1 bs=512k count=15 oflag=direct
cap lvs_small "${LVS[@]}" --all --options "$F" small
# with one extent free, lvcreate shrinks a 100%ORIGIN request to it and says nothing about it
cap lvcreate_percent_shrinks lvcreate --snapshot --name ov+c2 --extents 100%ORIGIN --permission r --addtag snapcore small/ov


q vgremove -f vg0 small
q losetup -d "$L0" "$L1"
rm -f /dev/shm/rec0.img /dev/shm/rec1.img
echo "record: done" >&2
