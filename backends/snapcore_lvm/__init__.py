"""snapcore lvm backend: snapshots of LVM logical volumes, classic and thin."""
