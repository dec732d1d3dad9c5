"""snapcore qemu hypervisor plugin: running QEMU domains over QMP."""
