"""The external snapshot of a file-based disk image, done one way for every format.

The disk's image at path ``P`` keeps its path; the snapshot is made in three steps, each atomic
and made durable before the next:

1. **link**: the image's inode gets a second name, the target ``T`` (``os.link``, then an
   ``fsync`` of ``T``'s directory). ``T`` is the snapshot, frozen from then on;
2. **write**: a new overlay backed by ``T`` is written in full under a scratch name beside
   ``P`` by a format-specific callable (``qemu-img create -b T``, ``vhd-util snapshot``, a
   native engine ...), given ``P``'s mode and owner, and flushed;
3. **switch**: the overlay replaces ``P`` (``os.replace``, then an ``fsync`` of ``P``'s
   directory), and the names are checked: ``P`` is the overlay step 2 wrote, ``T`` the image
   ``P`` named before step 1, and the two are never one inode.

A crash at any point leaves ``P`` naming a complete image, its old one or the new overlay, and
:meth:`ExternalOverlay.undo` puts the disk back from any of those states, in any process.
:class:`ExternalOverlay` is the procedure; the qcow2 and vhd backends use it, and so can a
third-party backend for another file format (VMDK, say)::

    overlay = ExternalOverlay(disk.path, target, driver="vmdk", vdev=disk.vdev)
    overlay.create(
        lambda scratch: ctx.run(["qemu-img", "create", "-f", "vmdk", "-F", "vmdk",
                                 "-b", target, scratch]),
        fold_back=lambda: fold_back(overlay),
    )

**Scratch names.** Each :class:`ExternalOverlay` writes to a scratch name of its own,
``<P>.<pid>-<8 hex digits><suffix>`` (:func:`scratch_path`), so two commands never write one
scratch file. :func:`scratch_files` finds every scratch file of ``P`` that any command left (and
the fixed ``<P><suffix>`` of snapcore 0.1), for :meth:`ExternalOverlay.undo` and recovery to
remove. Removing them is only safe while the caller holds the lock that keeps every other
snapcore command off the disk (the per-domain and per-image locks the coordinator takes before
any storage hook runs): a scratch file of a command still running would be removed with them.

**Identity.** Files are compared by device and inode (:func:`file_id`), never by path text.
A snapshot whose file were the same inode as the live disk would change whenever the domain
writes: :meth:`ExternalOverlay.switch` raises :class:`ImageIdentityError` rather than return
in that state.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Final

from snapcore.errors import BackendError
from snapcore.files import copy_mode, fsync_file, fsync_parent, remove

__all__ = [
    "NAME_MAX",
    "SCRATCH_SUFFIX",
    "SYSTEM_DIRS",
    "ExternalOverlay",
    "ImageIdentityError",
    "backing_problem",
    "default_target",
    "file_id",
    "name_problems",
    "remove_scratch",
    "replace_image",
    "same_file",
    "scratch_files",
    "scratch_path",
]

#: Longest file name (one path component) Linux file systems take, in bytes.
NAME_MAX: Final = 255
#: Longest path, in bytes.
PATH_MAX: Final = 4096
#: Longest scratch-name tail :func:`scratch_path` adds to a file name, suffix excluded
#: (``.<pid up to 7 digits>-<8 hex>``).
SCRATCH_TAIL: Final = 1 + 7 + 1 + 8
#: Directories whose files are never an image of a domain: a backing chain reaching one is
#: refused (``/etc/shadow`` as a backing file would hand the host's secrets to the guest).
SYSTEM_DIRS: Final = (
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
    "/run",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/var/log",
    "/var/run",
)
#: First bytes of the image formats snapcore knows, at offset 0.
_MAGICS: Final = (b"QFI\xfb", b"KDMV", b"conectix", b"# Disk DescriptorFile")

log = logging.getLogger(__name__)

#: The suffix of scratch files when a backend names none of its own.
SCRATCH_SUFFIX: Final = ".snapcore-tmp"
#: What sits between ``P`` and the suffix in a scratch name: ``.<pid>-<8 hex digits>``.
_UNIQUE: Final = r"\.[0-9]+-[0-9a-f]{8}"


class ImageIdentityError(BackendError):
    """A snapshot's file and the disk's image are not the files they must be (one inode for
    both, or a name that another command replaced meanwhile).

    :ivar path: the disk's image ``P``.
    :ivar target: the snapshot's file ``T``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        target: str,
        driver: str | None = None,
        vdev: str | None = None,
    ):
        self.path = path
        self.target = target
        super().__init__(message, driver=driver, vdev=vdev)


# -- names ------------------------------------------------------------------------------------


def file_id(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(device, inode)`` of the file *path* resolves to (symlinks followed), or ``None`` when
    it does not exist or cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Both names exist and are one inode (a hard link, a symlink to it, or the same path)."""
    ka = file_id(a)
    return ka is not None and ka == file_id(b)


def default_target(path: str, name: str, extension: str, *, strip_any: bool = True) -> str:
    """Where snapshot *name* of the image at *path* goes when no target is given:
    ``<dir of path>/<stem>.<name>.<extension>``.

    The stem is the file name without its last suffix (``vda.img`` gives ``vda``) when
    *strip_any*, else without ``.<extension>`` only (``vda.img`` stays ``vda.img``).
    """
    p = Path(os.path.abspath(path))
    stem = p.stem if strip_any else p.name.removesuffix(f".{extension}")
    return str(p.with_name(f"{stem}.{name}.{extension}"))


def name_problems(*paths: str, suffix: str = SCRATCH_SUFFIX) -> list[str]:
    """What stops *paths* from being made as files, or given a scratch name with *suffix*
    beside them: a file name longer than :data:`NAME_MAX` bytes, or a path longer than
    :data:`PATH_MAX`. For a create check, so that a name that cannot fit is refused up front
    (exit 2) rather than failing half-way."""
    problems = []
    for path in paths:
        name = os.path.basename(path).encode()
        longest = len(name) + SCRATCH_TAIL + len(suffix.encode())
        if len(name) > NAME_MAX:
            problems.append(f"the file name of {path} is {len(name)} bytes; at most {NAME_MAX}")
        elif longest > NAME_MAX:
            problems.append(
                f"the file name of {path} is {len(name)} bytes, too long for the scratch name "
                f"beside it ({longest} > {NAME_MAX} bytes); use a shorter file or snapshot name"
            )
        if len(os.path.abspath(path).encode()) + SCRATCH_TAIL + len(suffix) > PATH_MAX:
            problems.append(f"the path {path[:60]}... is longer than {PATH_MAX} bytes")
    return problems


def _known_image(path: str, size: int) -> bool:
    """Whether the file at *path* starts (or, for VHD, ends) like an image snapcore knows."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
            tail = b""
            if size >= 512:
                f.seek(size - 512)
                tail = f.read(512)
    except OSError:
        return False
    return head.startswith(_MAGICS) or tail.startswith(b"conectix")


def backing_problem(backing: str, *, image_dirs: Collection[str] = ()) -> str | None:
    """Why the backing file *backing* of an image must not be followed, or ``None``.

    Refused: a backing file that is not a regular file (a device, a FIFO), one under a system
    directory (:data:`SYSTEM_DIRS`), and one that is not an image of a format snapcore knows
    (qcow2, VMDK, VHD: read from its first bytes) and lies outside *image_dirs* (the
    directories of the domain's images): a raw backing file could be any host file. Reads at
    most 1 KiB of the file; changes nothing.
    """
    real = os.path.realpath(backing)
    for system in SYSTEM_DIRS:
        if real.startswith("/dev/shm/"):
            break  # shared memory: a scratch file system, not a system file
        if real == system or real.startswith(system + "/"):
            return f"the backing file {backing} is a system file ({real}); refused"
    try:
        st = os.stat(real)
    except OSError as exc:
        return f"the backing file {backing} cannot be read: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"the backing file {backing} is not a regular file (a device or a special file)"
    inside = any(real.startswith(os.path.realpath(d).rstrip("/") + "/") for d in image_dirs if d)
    if inside or _known_image(real, st.st_size):
        return None
    return (
        f"the backing file {backing} is not an image of a known format and lies outside the "
        "domain's image directories; refused (it could be any host file)"
    )


def scratch_path(path: str, suffix: str = SCRATCH_SUFFIX) -> str:
    """A scratch name beside *path* that no other call returns, in this process or another:
    ``<abs path>.<pid>-<8 hex digits><suffix>``."""
    return f"{os.path.abspath(path)}.{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def scratch_files(path: str, suffix: str = SCRATCH_SUFFIX) -> list[str]:
    """Every scratch file of *path* there is now, sorted: the names :func:`scratch_path` gives
    (from any process) and the fixed ``<path><suffix>`` that snapcore 0.1 used. No other file
    matches. Only the caller's lock on the disk makes it safe to act on the answer (see the
    module docstring)."""
    absolute = os.path.abspath(path)
    folder, base = os.path.split(absolute)
    pattern = re.compile(f"{re.escape(base)}(?:{_UNIQUE})?{re.escape(suffix)}")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(os.path.join(folder, n) for n in names if pattern.fullmatch(n))


def remove_scratch(path: str, suffix: str = SCRATCH_SUFFIX) -> list[str]:
    """Remove every scratch file of *path* (:func:`scratch_files`), durably; return them.
    Call it only under the disk's lock."""
    found = scratch_files(path, suffix)
    for scratch in found:
        remove(scratch)
    return found


def replace_image(path: str, write: Callable[[str], None], suffix: str = SCRATCH_SUFFIX) -> None:
    """Write a new image with ``write(scratch)`` under a fresh scratch name, give it the mode
    and owner of the image at *path* (if there is one), flush it and rename it onto *path*.

    Scratch files of *path* an earlier command left (it was killed between its write and its
    rename) are removed first, so a revert that recovery runs again leaves none behind. Call
    it only under the disk's lock (see the module docstring).

    A *path* that is a symlink stays one: the file it names is replaced.

    Failure guarantee: *path* holds its old image unless the new one is complete; when it
    raises, the scratch file is removed.
    """
    path = os.path.realpath(path)
    for leftover in remove_scratch(path, suffix):
        log.info("removed %s, left by a command that was killed", leftover)
    scratch = scratch_path(path, suffix)
    try:
        write(scratch)
        if os.path.exists(path):
            copy_mode(path, scratch)
        fsync_file(scratch)
        os.replace(scratch, path)
        fsync_parent(path)
    except BaseException:
        remove(scratch)
        raise


# -- the procedure ----------------------------------------------------------------------------


class ExternalOverlay:
    """The external snapshot of the image at *path* into *target* (both made absolute).

    Use :meth:`create`, or its steps :meth:`link`, :meth:`write` and :meth:`switch` in that
    order when something must happen between them (the qcow2 backend hands the overlay to a
    running QEMU between write and switch). :meth:`undo` needs no state from the object that
    created: a new :class:`ExternalOverlay` for the same *path* and *target*, in another
    process after a crash, undoes just as well.

    :param suffix: the end of the scratch names (a backend keeps its own, e.g. vhd's
        ``.snapcore-new``).
    :param driver: for the errors raised.
    :param vdev: for the errors raised.
    """

    def __init__(
        self,
        path: str,
        target: str,
        *,
        suffix: str = SCRATCH_SUFFIX,
        driver: str | None = None,
        vdev: str | None = None,
    ):
        #: The disk's image ``P``: the file *path* names, symlinks resolved, so that a disk
        #: named through a symlink keeps its symlink (naming the new overlay afterwards) and
        #: ``T`` is a second name of the image itself, never of the symlink.
        self.path = os.path.realpath(path)
        #: The snapshot's file ``T``.
        self.target = os.path.abspath(target)
        self.suffix = suffix
        self.driver = driver
        self.vdev = vdev
        #: Where :meth:`write` puts the overlay: unique to this object.
        self.scratch = scratch_path(self.path, suffix)
        #: The inode ``P`` named when :meth:`link` made ``T``.
        self.frozen: tuple[int, int] | None = None
        #: The inode :meth:`write` wrote.
        self.overlay: tuple[int, int] | None = None
        #: :meth:`link` made ``T`` (so an undo may remove it).
        self.linked = False

    def _error(self, message: str) -> BackendError:
        return BackendError(message, driver=self.driver, vdev=self.vdev)

    def _identity(self, message: str) -> ImageIdentityError:
        return ImageIdentityError(
            message, path=self.path, target=self.target, driver=self.driver, vdev=self.vdev
        )

    # -- the steps --------------------------------------------------------------------------

    def link(self) -> None:
        """Step 1: ``T`` becomes a second name of ``P``'s image, durably.

        Failure guarantee: when ``T`` already exists, or ``P`` does not, it raises
        :class:`~snapcore.errors.BackendError` having made nothing. Otherwise a failure after
        the link leaves ``T`` for :meth:`undo`, which removes it.
        """
        if os.path.lexists(self.target):
            raise self._error(f"the snapshot target {self.target} already exists")
        self.frozen = file_id(self.path)
        if self.frozen is None:
            raise self._error(f"the disk's image {self.path} does not exist")
        try:
            os.link(self.path, self.target)
        except FileExistsError as exc:  # made since the look above: not ours
            raise self._error(f"the snapshot target {self.target} already exists") from exc
        self.linked = True
        fsync_parent(self.target)
        if file_id(self.target) != self.frozen:
            raise self._identity(
                f"{self.target} is not the image {self.path} named when it was linked "
                "(the image was replaced meanwhile)"
            )

    def write(self, make: Callable[[str], None]) -> None:
        """Step 2: ``make(scratch)`` writes the new overlay, backed by ``T``, to this object's
        scratch name; it then gets ``P``'s mode and owner and is flushed.

        Failure guarantee: when it raises, the scratch file is removed and ``P`` and ``T``
        are as :meth:`link` left them.
        """
        remove(self.scratch)
        try:
            make(self.scratch)
            if not os.path.isfile(self.scratch):
                raise self._error(f"no overlay was written to {self.scratch}")
            copy_mode(self.path, self.scratch)
            fsync_file(self.scratch)
            self.overlay = file_id(self.scratch)
        except BaseException:
            remove(self.scratch)
            raise

    def switch(self) -> None:
        """Step 3: the overlay replaces ``P`` atomically and durably; then :meth:`verify`.

        Failure guarantee: when the rename fails, ``P`` is unchanged and the scratch file is
        left for :meth:`undo`. When :meth:`verify` raises, ``P`` may already be the overlay:
        run :meth:`undo`.
        """
        os.replace(self.scratch, self.path)
        fsync_parent(self.path)
        self.verify()

    def verify(self) -> None:
        """Check the names after the switch: ``P`` and ``T`` exist and are different inodes,
        ``P`` is the overlay :meth:`write` wrote and ``T`` the image ``P`` named at
        :meth:`link` (as far as this object saw those steps).

        :raises ImageIdentityError: when any of that is false; the snapshot must not be
            recorded.
        """
        p, t = file_id(self.path), file_id(self.target)
        if p is None or t is None:
            missing = self.path if p is None else self.target
            raise self._identity(f"{missing} is missing right after the snapshot was made")
        if p == t:
            raise self._identity(
                f"{self.path} and the snapshot's file {self.target} are one inode: the "
                "snapshot would change whenever the disk is written"
            )
        if self.overlay is not None and p != self.overlay:
            raise self._identity(
                f"{self.path} is not the overlay this command wrote (another command "
                "replaced it meanwhile?)"
            )
        if self.frozen is not None and t != self.frozen:
            raise self._identity(
                f"{self.target} is not the image {self.path} held when the snapshot was "
                "taken (another command replaced it meanwhile?)"
            )

    # -- all of it --------------------------------------------------------------------------

    def create(
        self,
        make: Callable[[str], None],
        *,
        after_link: Callable[[], None] | None = None,
        fold_back: Callable[[], None] | None = None,
    ) -> None:
        """Make the snapshot: :meth:`link`, *after_link* (if given: e.g. fix ``T``'s header),
        :meth:`write` with *make*, :meth:`switch`.

        Failure guarantee: when it raises, the disk is as it was: :meth:`undo` (with
        *fold_back*) has run, unless ``T`` existed before (then nothing was touched). Should
        the undo fail too, its error is logged and noted on the exception, and :meth:`undo`
        run again (by any process holding the disk's lock) finishes it.
        """
        try:
            self.link()
            if after_link is not None:
                after_link()
            self.write(make)
            self.switch()
        except BaseException as exc:
            if not self.linked:
                raise  # T, if it exists, is not ours: nothing was made
            try:
                self.undo(fold_back)
            except Exception as failed:
                log.exception("undoing the snapshot of %s failed", self.path)
                exc.add_note(f"undoing it failed too: {failed}")
            raise

    def undo(self, fold_back: Callable[[], None] | None = None) -> None:
        """Undo :meth:`create` from any state it (or a crashed process) reached; idempotent.

        In order: every scratch file of ``P`` is removed (:func:`remove_scratch`: call this
        only under the disk's lock); a ``T`` that does not exist means nothing more to do; a
        ``T`` that is a second name of ``P``'s image is unlinked; otherwise ``P`` may already
        be the new overlay over ``T``, and *fold_back* is called.

        *fold_back* is the format's part: when ``P`` is an overlay backed by ``T``, it merges
        the overlay's data into ``T`` (so what the domain wrote since is kept) and then calls
        :meth:`put_back`; when ``P`` is anything else, ``T`` is not this create's and it must
        return without touching either; it raises when it cannot do either safely.

        Failure guarantee: every step is atomic or can run again, so a failed undo is finished
        by calling it again; the disk's data is never lost.
        :raises BackendError: ``T`` exists but ``P`` does not (both are left for an operator),
            or ``P`` is not ``T`` and no *fold_back* was given.
        """
        remove_scratch(self.path, self.suffix)
        if not os.path.lexists(self.target):
            return
        if not os.path.exists(self.path):
            raise self._error(
                f"{self.path} is missing while the snapshot target {self.target} exists; "
                "leaving both for an operator"
            )
        if same_file(self.path, self.target):
            remove(self.target)
            return
        if fold_back is None:
            raise self._error(
                f"{self.path} is not the image {self.target} names and no way to fold an "
                "overlay back was given; leaving both"
            )
        fold_back()

    def put_back(self) -> None:
        """After a fold-back merged ``P``'s data into ``T``: ``T`` takes ``P``'s mode and
        owner and is renamed onto ``P``, durably. Atomic: ``P`` names the overlay or the old
        image, never nothing."""
        copy_mode(self.path, self.target)
        os.replace(self.target, self.path)
        fsync_parent(self.path)
