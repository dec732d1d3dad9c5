"""The exceptions of the native VHD engine (standard library only, no snapcore import).

Each carries the file it is about in ``path`` and a one-line ``message``; ``str()`` is
``"<path>: <message>"``. The storage plugin turns them into blockers or snapcore errors::

    VhdError
    ├── NotVhdError          the file is not a VHD at all
    ├── CorruptVhdError      a VHD whose metadata is damaged (checksum, offsets, overlaps)
    ├── UnsupportedVhdError  a valid VHD using a feature the engine does not handle
    └── ChainError           a parent that is missing, of another UUID, cyclic, or too deep
"""

from __future__ import annotations


class VhdError(Exception):
    """A VHD file cannot be used as asked."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


class NotVhdError(VhdError):
    """The file is not a VHD."""


class CorruptVhdError(VhdError):
    """The VHD's metadata is damaged."""


class UnsupportedVhdError(VhdError):
    """The VHD uses something the engine does not support (block size, encryption, type)."""


class ChainError(VhdError):
    """The parent chain is broken: a parent missing, of another UUID, cyclic or too deep."""
