"""snapcore's qcow2 backend: internal and external snapshots of qcow2 images via qemu-img.

``plugin`` holds the hook implementations (the ``qcow2`` entry point), ``offline`` the
algorithms for disks of stopped domains, ``qemu_img`` the typed wrapper over the qemu-img
command line. Importing the package registers nothing.
"""
