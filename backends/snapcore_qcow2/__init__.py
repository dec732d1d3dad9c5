"""snapcore qcow2 backend: internal and external snapshots of qcow2 images via qemu-img."""
