"""Durable file operations shared by the store and the file-based backends.

A rename or unlink is only durable once the directory holding it is flushed; these helpers say
so in one place. Each raises ``OSError`` as the system call does.
"""

from __future__ import annotations

import os


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Flush a directory's entries to disk (after a rename, link or unlink in it)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_parent(path: str | os.PathLike[str]) -> None:
    """Flush the directory that holds *path*."""
    fsync_dir(os.path.dirname(os.path.abspath(path)) or ".")


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: str | os.PathLike[str]) -> None:
    """Remove *path* if it exists, durably; a missing file is not an error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_parent(path)


def copy_mode(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Give *dest* the permission bits and owner of *source* (a replacement image keeps the
    access the hypervisor had to the original)."""
    st = os.stat(source)
    os.chmod(dest, st.st_mode & 0o7777)
    dst = os.stat(dest)
    if (dst.st_uid, dst.st_gid) != (st.st_uid, st.st_gid):
        os.chown(dest, st.st_uid, st.st_gid)
