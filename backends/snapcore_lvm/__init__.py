"""snapcore lvm backend: snapshots of LVM logical volumes, classic (thick) and thin.

``plugin`` holds the hook implementations (the entry point), ``lvm`` the typed wrapper over the
LVM command-line tools, ``devices`` the path and device-mapper name rules (no commands) and
``volume`` the snapshot algorithms. Importing this package registers nothing.
"""
