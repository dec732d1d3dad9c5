"""snapcore-rawcopy: a snapcore storage backend for raw image files, snapshotted by copy.

The hooks live in :mod:`snapcore_rawcopy.plugin`, which the ``snapcore.plugins`` entry point
names; importing this package registers nothing.
"""
