"""VHD chains with XAPI's snapshot semantics: the algorithms of the vhd backend.

**Layout.** A disk's path ``P`` always holds the *leaf*, the VHD the domain writes. Taking
snapshot *name* turns the leaf into a hidden, read-only *base* at the target ``B`` (default
``<dir>/<stem>.<name>.vhd``) and puts a new, empty leaf over ``B`` at ``P``, so the domain's
configuration never changes (XAPI's storage manager does the same: hard-link the leaf to the
base's name, create the child, rename it onto the leaf's name, ``set -f hidden``). A snapshot is
its base: reverting makes a fresh leaf over the base, whichever snapshot it is, and keeps every
other snapshot; deleting merges the base away without breaking any chain:

* a base no file depends on is unlinked;
* a base with one child ``C`` absorbs ``C`` (``coalesce -n C``) and takes its place at ``C``'s
  path; ``C``'s children are relinked to it (``modify -p``) through a second name before the
  rename, so that none of them ever names a file with another UUID than it records
  (:meth:`VhdDisk._resume`). Journaled in ``<base>.snapcore-merge``, so that an interrupted or
  failed delete is finished by running it again;
* a base with several children (the disk was reverted to it and written since) keeps its data
  for them under a new name, ``<stem>.base-<uuid>.vhd`` (hard link, relink the children,
  unlink); once one child or none is left, a later delete merges or unlinks it.

A chain is never deeper than ``max_depth`` files (30 by default, XAPI's ``MAX_CHAIN_SIZE``):
a snapshot of a leaf at that depth is refused in preflight.

**Engines.** Files are changed through :mod:`snapcore_vhd.engine`: vhd-util when installed, the
native engine otherwise. Which file is whose parent is read natively, read-only.

**Live disks.** When the domain runs (Xen), the leaf is switched inside the coordinator's pause:
``tap-ctl pause`` the tapdisk serving ``P``, change the files, ``tap-ctl unpause -a vhd:P``; the
tapdisk reopens ``P``, now the new leaf. A delete whose base is in the running leaf's chain holds
the tapdisk paused while it merges.

**Crash safety.** Create is the external snapshot procedure of :mod:`snapcore.overlay`: ``B``
becomes a second name of the leaf (``link``), the new leaf is built under a scratch name unique
to the command (``P.<pid>-<hex>.snapcore-new``) and renamed onto ``P``: each step atomic, so
:meth:`VhdDisk.abort` undoes any prefix of it. Revert builds the new leaf beside ``P`` and
renames it. Delete is journaled as above; every step can run again, and at every point
each file reads back what it did: the rename of the merged base onto its child's path is the
one commit point.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from snapcore.context import ProgressCallback
from snapcore.errors import BackendError, UnsupportedOperationError
from snapcore.files import copy_mode as _copy_mode
from snapcore.files import fsync_parent as _fsync_dir
from snapcore.files import remove as _remove
from snapcore.model import (
    Disk,
    DiskSnapshot,
    DomainState,
    ProgressEvent,
    SnapshotKind,
    SnapshotRequest,
)
from snapcore.overlay import ExternalOverlay, replace_image, scratch_files
from snapcore.overlay import default_target as _default_target
from snapcore.overlay import file_id as _key
from snapcore.overlay import same_file as _same_file
from snapcore_vhd import ops
from snapcore_vhd.chain import Chain, find_parent
from snapcore_vhd.engine import Engine
from snapcore_vhd.errors import VhdError
from snapcore_vhd.image import VhdImage
from snapcore_vhd.names import DEFAULT_MAX_DEPTH, DRIVER
from snapcore_vhd.tap_ctl import PROGRAM as TAP_CTL
from snapcore_vhd.tap_ctl import TapCtl, Tapdisk

#: The format name a request may ask for.
FORMAT: Final = "vhd"
#: The new leaf is built beside the disk under a scratch name ending so
#: (:func:`snapcore.overlay.scratch_path`), then renamed onto it.
TMP_SUFFIX: Final = ".snapcore-new"
#: The journal of a merge, beside the base being merged away.
JOURNAL_SUFFIX: Final = ".snapcore-merge"
#: The second name a merged base has while the files depending on its child move over to it
#: (:meth:`VhdDisk._resume`); shorter than the journal's suffix, so it fits where the journal's
#: name does.
LINK_SUFFIX: Final = ".snapcore-link"
#: Infix of the name a base with several children is kept under once its snapshot is deleted.
RETIRED_INFIX: Final = ".base-"
#: File names that may reach vhd-util and tap-ctl: ASCII (blktap converts names to ASCII),
#: not an option, no separators or spaces.
_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
_MAX_GC_ROUNDS: Final = 64
#: The longest file name (bytes) the file systems snapcore runs on accept.
NAME_MAX: Final = 255


def default_target(path: str, name: str) -> str:
    """Where the base of snapshot *name* of leaf *path* goes when no target is given:
    ``<dir>/<name of path without .vhd>.<name>.vhd``."""
    return _default_target(path, name, FORMAT, strip_any=False)


def path_problem(path: str, what: str) -> str | None:
    """Why *path* may not reach a vhd-util or tap-ctl command line, or ``None``."""
    if not path or "\0" in path or "\n" in path:
        return f"{what} {path!r} is empty or holds a control character"
    if not os.path.isabs(path):
        return f"{what} {path} is not an absolute path"
    name = os.path.basename(path)
    if not _SAFE_NAME.fullmatch(name):
        return (
            f"{what} {path}: its file name must be ASCII letters, digits and '._+-', "
            "not starting with '-' or '.' (blktap stores parent names in ASCII)"
        )
    return None


def merge_link(node: str) -> str:
    """The second name base *node* has during its merge (``<node>.snapcore-link``): not a
    ``.vhd`` name, so never taken for a snapshot."""
    return node + LINK_SUFFIX


def _names_parent(path: str, parent: str, *, by_name: bool) -> bool:
    """Whether differencing VHD *path* is a child of *parent* as blktap resolves it: its
    parent locators lead to *parent* (*by_name*: to that very name; else to any name of that
    file) and the UUID it records is *parent*'s. Read-only; ``False`` when either cannot be
    read."""
    try:
        with VhdImage(path, headers_only=True) as image:
            header = image.header
            if header is None or not image.differencing:
                return False
            found = find_parent(image)
            wanted = header.parent_uuid
        with VhdImage(found, headers_only=True) as image:
            uuid = image.footer.uuid
    except (VhdError, OSError):
        return False
    if by_name:
        same = os.path.realpath(found) == os.path.realpath(parent)
    else:
        same = _same_file(found, parent)
    return same and uuid == wanted


def retired_path(node: Node) -> str:
    """The name a base with several children is kept under once its snapshot is deleted."""
    folder = os.path.dirname(node.path)
    stem = os.path.basename(node.path).removesuffix(".vhd").split(RETIRED_INFIX)[0]
    return os.path.join(folder, f"{stem}{RETIRED_INFIX}{node.uuid}.vhd")


def stray_links(folder: str) -> list[str]:
    """The kept-base names (``*.base-<uuid>.vhd``) in *folder* that are only a second name of
    another VHD file there and that no file names as its parent: what an interrupted or failed
    delete can leave (the link made, the children not yet relinked to it). Read-only."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".vhd"))
    except OSError:
        return []
    paths = [os.path.join(folder, n) for n in names]
    retired = [p for p in paths if RETIRED_INFIX in os.path.basename(p)]
    if not retired:
        return []
    tree = Tree(paths)
    named = {n.parent_path for n in tree.nodes.values() if n.parent_path}
    named |= {
        os.path.join(folder, os.path.basename(n.parent_path))
        for n in tree.nodes.values()
        if n.parent_path
    }
    out: list[str] = []
    for path in retired:
        if path in named:
            continue
        others = [p for p in paths if p != path and _same_file(p, path)]
        if others:
            out.append(path)
    return out


def remove_stray_links(folder: str) -> list[str]:
    """Remove :func:`stray_links` of *folder* (the data stays under its other name); return
    them. Only under the disk's lock."""
    found = stray_links(folder)
    for path in found:
        _remove(path)
    return found


# -- the tree of a disk ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """One VHD file of a disk's tree."""

    path: str
    key: tuple[int, int]
    parent: tuple[int, int] | None
    parent_path: str | None
    hidden: bool
    #: the file's size on disk
    size: int
    uuid: str
    #: why the file (or the way to its parent) cannot be read, if it cannot
    error: str | None = None
    #: a raw file, the parent of a differencing VHD (``vhd-util snapshot -m``): the end of a
    #: chain, never a snapshot of snapcore's
    raw: bool = False
    #: the parent is a raw file
    parent_raw: bool = False


class Tree:
    """The VHD files reachable from some seeds (and found in some directories), with their
    parents: enough to tell which files depend on which. Read-only.

    Files are identified by inode, so the two names of a hard-linked base are one node.
    """

    def __init__(self, seeds: Iterable[str], scan_dirs: Iterable[str] = ()):
        self.nodes: dict[tuple[int, int], Node] = {}
        queue = [(os.path.abspath(p), False) for p in seeds]
        for folder in dict.fromkeys(scan_dirs):
            with contextlib.suppress(OSError):
                queue += sorted(
                    (os.path.join(folder, n), False)
                    for n in os.listdir(folder)
                    if n.endswith(".vhd")
                )
        while queue:
            path, raw = queue.pop(0)
            key = _key(path)
            if key is None or key in self.nodes:
                continue
            node = self._raw(path, key) if raw else self._read(path, key)
            self.nodes[key] = node
            if node.parent_path is not None:
                queue.append((node.parent_path, node.parent_raw))
        for node in list(self.nodes.values()):  # a raw parent that was also a seed
            seed = self.nodes.get(node.parent) if node.parent_raw and node.parent else None
            if seed is not None and not seed.raw:
                self.nodes[seed.key] = self._raw(seed.path, seed.key)

    @staticmethod
    def _raw(path: str, key: tuple[int, int]) -> Node:
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            return Node(path, key, None, None, False, 0, "", error=f"{path}: {exc.strerror}")
        return Node(path, key, None, None, False, size, "", raw=True)

    @staticmethod
    def _read(path: str, key: tuple[int, int]) -> Node:
        try:
            with VhdImage(path, headers_only=True) as image:
                parent_path = None
                parent_raw = False
                if image.differencing:
                    header = image.header
                    assert header is not None
                    parent_path = os.path.abspath(find_parent(image))
                    parent_raw = header.raw_parent
                return Node(
                    path=path,
                    key=key,
                    parent=_key(parent_path) if parent_path else None,
                    parent_path=parent_path,
                    hidden=image.hidden,
                    size=os.path.getsize(path),
                    uuid=image.footer.uuid_str,
                    parent_raw=parent_raw,
                )
        except (VhdError, OSError) as exc:
            message = str(exc) if isinstance(exc, VhdError) else f"{path}: {exc.strerror}"
            return Node(path, key, None, None, False, 0, "", error=message)

    def node(self, path: str) -> Node | None:
        key = _key(path)
        return self.nodes.get(key) if key else None

    def children(self, node: Node) -> list[Node]:
        return sorted(
            (n for n in self.nodes.values() if n.parent == node.key), key=lambda n: n.path
        )

    def ancestors(self, path: str) -> list[Node]:
        """The parents of *path*, nearest first."""
        out: list[Node] = []
        node = self.node(path)
        seen: set[tuple[int, int]] = set()
        while node is not None and node.parent is not None and node.parent not in seen:
            seen.add(node.parent)
            node = self.nodes.get(node.parent)
            if node is not None:
                out.append(node)
        return out


# -- the disk -------------------------------------------------------------------------------


class VhdDisk:
    """The vhd operations on one disk (``vdev``) of a domain.

    Every method may raise :class:`~snapcore.errors.CommandError` (a tool failed),
    :class:`~snapcore_vhd.errors.VhdError` (a file the native engine cannot use), :class:`OSError`
    or :class:`~snapcore.errors.BackendError`; the plugin attributes them to the disk. The
    ``*_check`` methods change nothing and report problems as blockers instead of raising.
    """

    def __init__(
        self,
        *,
        vdev: str,
        engine: Engine,
        tap: TapCtl,
        hypervisor: str,
        state: DomainState,
        max_depth: int = DEFAULT_MAX_DEPTH,
        log: logging.Logger,
        progress: ProgressCallback,
    ):
        self.vdev = vdev
        self.engine = engine
        self.tap = tap
        self.hypervisor = hypervisor
        self.state = state
        self.max_depth = max_depth
        self.log = log
        self._progress = progress

    @property
    def live(self) -> bool:
        return self.state is not DomainState.SHUTOFF

    def _error(self, message: str) -> BackendError:
        return BackendError(message, driver=DRIVER, vdev=self.vdev)

    def _step(self, step: str, message: str) -> None:
        self.log.info("disk %s: %s", self.vdev, message)
        self._progress(ProgressEvent(step=step, vdev=self.vdev, message=message))

    # -- live switching ---------------------------------------------------------------------

    def _live_blockers(self, path: str) -> list[str]:
        if not self.live:
            return []
        if self.hypervisor != "xen":
            return [
                f"the domain is {self.state} under {self.hypervisor!r}; a running VHD disk can "
                "only be switched by tapdisk, in a Xen domain"
            ]
        if shutil.which(TAP_CTL) is None:
            return [f"the domain is {self.state} and {TAP_CTL} is not installed (blktap)"]
        if self.tap.find(path) is None:
            return [
                f"the domain is {self.state} but no tapdisk serves {path} "
                f"({TAP_CTL} list -f {path} shows none)"
            ]
        return []

    @contextlib.contextmanager
    def _held(self, path: str, hold: bool = True) -> Iterator[None]:
        """With the domain running: the tapdisk serving *path* paused, and on exit unpaused
        on *path* (``-a vhd:PATH``), whatever *path* holds by then."""
        if not (self.live and hold):
            yield
            return
        tap: Tapdisk | None = self.tap.find(path)
        if tap is None:
            raise self._error(f"no tapdisk serves {path}; cannot switch a running disk")
        self._step("tapdisk", f"pause tapdisk {tap.pid} minor {tap.minor}")
        self.tap.pause(tap)
        try:
            yield
        finally:
            self._step("tapdisk", f"unpause tapdisk {tap.pid} minor {tap.minor} on {path}")
            self.tap.unpause(tap, path)

    # -- checks shared by the operations ------------------------------------------------------

    def _chain_blockers(self, path: str) -> tuple[list[str], int]:
        """What is wrong with the chain of *path*, and its depth (0 when unreadable)."""
        try:
            with Chain(path) as chain:
                depth = chain.depth
        except VhdError as exc:
            return [str(exc)], 0
        except OSError as exc:
            return [f"{path}: {exc.strerror}"], 0
        problems = self.engine.check(path)
        return [f"{path}: {p}" for p in problems], depth

    # -- create -----------------------------------------------------------------------------

    def target(self, request: SnapshotRequest) -> str:
        """The base's path: the request's target, else beside the disk's image (the file its
        path names, symlinks resolved: a chain's files share one directory)."""
        return request.target or default_target(os.path.realpath(request.disk.path), request.name)

    def create_check(self, request: SnapshotRequest) -> list[str]:
        """Blockers for :meth:`create`; changes nothing."""
        blockers: list[str] = []
        path = os.path.abspath(request.disk.path)
        if request.kind not in (None, SnapshotKind.EXTERNAL):
            blockers.append(
                f"a VHD snapshot is a base file under the new leaf (external), not {request.kind}"
            )
        if request.format not in (None, FORMAT):
            blockers.append(f"a VHD disk's snapshot is a VHD, not {request.format}")
        blockers += [p for p in (path_problem(path, "the disk"),) if p]
        if blockers:
            return blockers
        if not os.path.isfile(path):
            return [f"{path} does not exist or is not a file"]
        problems, depth = self._chain_blockers(path)
        if problems:
            return problems
        info = self.engine.query(path)
        if info.hidden:
            blockers.append(f"{path} is marked hidden: it is a base, not a disk's leaf")
        if depth >= self.max_depth:
            blockers.append(
                f"the VHD chain of {path} is {depth} files deep and the limit is "
                f"{self.max_depth} (as XAPI's); delete a snapshot of this disk first"
            )
        blockers += self._target_blockers(path, self.target(request))
        blockers += self._live_blockers(path)
        return blockers

    def _target_blockers(self, path: str, target: str) -> list[str]:
        problem = path_problem(target, "the snapshot target")
        if problem:
            return [problem]
        blockers: list[str] = []
        folder = os.path.dirname(target)
        if os.path.lexists(target):
            blockers.append(f"the snapshot target {target} already exists")
        if not os.path.isdir(folder):
            return [*blockers, f"the directory of the snapshot target {target} does not exist"]
        home = os.path.dirname(os.path.realpath(path))
        if os.path.realpath(folder) != home:
            blockers.append(
                f"the snapshot target {target} is not in {home}, the directory of the disk's "
                "image: a VHD names its parent by a path relative to its own directory (as "
                "blktap does), so the files of a chain stay in one directory"
            )
        if os.stat(folder).st_dev != os.stat(path).st_dev:
            blockers.append(
                f"the snapshot target {target} is on another file system than {path}; the "
                "leaf becomes the base by a hard link, which needs one file system"
            )
        for d in sorted({folder, os.path.dirname(path)}):
            if not os.access(d, os.W_OK | os.X_OK):
                blockers.append(f"the directory {d} is not writable")
        for scratch in scratch_files(path, TMP_SUFFIX):
            blockers.append(f"{scratch} exists (left by an interrupted command?)")
        return blockers

    def create(self, request: SnapshotRequest) -> DiskSnapshot:
        """Turn the leaf into base ``B`` and put a new leaf over it at the disk's path.

        Failure guarantee: when it raises, :meth:`abort` has run, so the disk is as before.
        """
        path = os.path.abspath(request.disk.path)
        target = self.target(request)
        for problem in (path_problem(path, "the disk"), path_problem(target, "the target")):
            if problem:
                raise self._error(problem)
        if os.path.lexists(target):
            raise self._error(f"the snapshot target {target} already exists")
        overlay = self._overlay(path, target)
        with self._held(path):
            self._step("create", f"{path} becomes base {target}; a new leaf takes its place")
            overlay.create(
                lambda tmp: self.engine.snapshot(tmp, target),
                fold_back=lambda: self._fold_back(overlay),
            )
            try:
                self.engine.set_hidden(target, True)
            except BaseException:
                try:
                    self._abort(path, target)
                except Exception:
                    self.log.exception("disk %s: undoing the failed create failed", self.vdev)
                raise
        info = self.engine.query(target)
        return DiskSnapshot(
            vdev=self.vdev,
            path=request.disk.path,
            driver=DRIVER,
            kind=SnapshotKind.EXTERNAL,
            name=request.name,
            locator=target,
            size=info.physical_size,
            extra={"engine": self.engine.name},
        )

    def abort(self, request: SnapshotRequest) -> bool:
        """Undo :meth:`create` from whatever point it reached; idempotent."""
        path = os.path.abspath(request.disk.path)
        target = self.target(request)
        with self._held(path, hold=os.path.lexists(target) and not _same_file(path, target)):
            self._abort(path, target)
        return True

    def _overlay(self, path: str, target: str) -> ExternalOverlay:
        return ExternalOverlay(path, target, suffix=TMP_SUFFIX, driver=DRIVER, vdev=self.vdev)

    def _abort(self, path: str, target: str) -> None:
        if os.path.lexists(target) and _same_file(path, target):
            self._step("abort", f"remove {target}, a second name of {path}")
        overlay = self._overlay(path, target)
        overlay.undo(lambda: self._fold_back(overlay))

    def _fold_back(self, overlay: ExternalOverlay) -> None:
        """The leaf at ``P`` is a child of base ``B``: merge it into ``B``, which becomes the
        leaf ``P`` again (:meth:`ExternalOverlay.undo`'s fold-back)."""
        path, target = overlay.path, overlay.target
        tree = Tree([path, target])
        leaf, base = tree.node(path), tree.node(target)
        if leaf is None or base is None or leaf.parent != base.key:
            raise self._error(
                f"cannot undo the snapshot: {path} is not a child of {target}, so {target} "
                "was not made by this create; left as it is"
            )
        if tree.children(base) != [leaf]:
            raise self._error(f"cannot undo the snapshot: other files depend on {target}")
        if ops.query(path, depth=False).allocated:
            self._step("abort", f"merge {path} back into {target}")
            self.engine.coalesce(path)
        self.engine.set_hidden(target, False)
        overlay.put_back()
        self._step("abort", f"{target} is the leaf {path} again")

    # -- revert -----------------------------------------------------------------------------

    def revert_check(self, snapshot: DiskSnapshot) -> list[str]:
        """Blockers for :meth:`revert`; changes nothing."""
        base = os.path.abspath(snapshot.locator)
        path = os.path.abspath(snapshot.path)
        blockers = [p for p in (path_problem(path, "the disk"),) if p]
        if blockers:
            return blockers
        if not os.path.isfile(base):
            return [f"the snapshot's base {base} is gone"]
        problems, depth = self._chain_blockers(base)
        if problems:
            return problems
        if depth + 1 > self.max_depth:
            blockers.append(
                f"a leaf over {base} would make a chain {depth + 1} files deep; the limit is "
                f"{self.max_depth}"
            )
        if os.path.exists(path):
            tree = Tree([path], [os.path.dirname(path)])
            leaf = tree.node(path)
            if leaf is not None and tree.children(leaf):
                names = ", ".join(c.path for c in tree.children(leaf))
                blockers.append(f"{path} has children ({names}); replacing it would orphan them")
        folder = os.path.dirname(path)
        if not os.access(folder, os.W_OK | os.X_OK):
            blockers.append(f"the directory {folder} is not writable")
        return blockers

    def revert(self, snapshot: DiskSnapshot) -> bool:
        """A fresh leaf over the snapshot's base replaces the leaf; every base is kept."""
        base = os.path.abspath(snapshot.locator)
        path = os.path.abspath(snapshot.path)
        problem = path_problem(path, "the disk")
        if problem:
            raise self._error(problem)
        if not os.path.isfile(base):
            raise self._error(f"the snapshot's base {base} is gone")
        self._step("revert", f"new leaf over {base} at {path}")
        replace_image(path, lambda tmp: self.engine.snapshot(tmp, base), TMP_SUFFIX)
        return True

    # -- delete -----------------------------------------------------------------------------

    def _tree(self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]) -> Tree:
        seeds = [snapshot.path, snapshot.locator] + [o.locator for o in others]
        dirs = [os.path.dirname(os.path.abspath(p)) for p in seeds]
        return Tree(seeds, dirs)

    @staticmethod
    def _mine(
        tree: Tree, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]
    ) -> set[tuple[int, int]]:
        """The files of this disk: its leaf, its snapshots' bases, and their ancestors. Files
        of other disks in the same directories (another disk cloned from a snapshot, say) are
        never merged, relinked or collected by this disk's deletes."""
        mine: set[tuple[int, int]] = set()
        for path in (snapshot.path, snapshot.locator, *(o.locator for o in others)):
            node = tree.node(path)
            if node is not None:
                mine.add(node.key)
                mine.update(n.key for n in tree.ancestors(path))
        return mine

    def _foreign_children(
        self, tree: Tree, node: Node, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]
    ) -> list[str]:
        mine = self._mine(tree, snapshot, others)
        return [
            f"{child.path} is based on {node.path} but is not a file of this disk (another "
            "disk made from this snapshot?); delete refused so as not to change it"
            for child in tree.children(node)
            if child.key not in mine
        ]

    def delete_check(self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]) -> list[str]:
        """Blockers for :meth:`delete`; changes nothing. A snapshot already gone is none."""
        base = os.path.abspath(snapshot.locator)
        if not os.path.lexists(base) or os.path.exists(base + JOURNAL_SUFFIX):
            return []
        tree = self._tree(snapshot, others)
        node = tree.node(base)
        if node is None:
            return []
        if node.error:
            return [node.error]
        blockers = self._foreign_children(tree, node, snapshot, others)
        if node.raw:
            blockers.append(
                f"{base} is a raw file, the base of a VHD chain, not a VHD snapshot; it is "
                "never merged"
            )
        children = tree.children(node)
        if len(children) > 1:
            blockers += self._retire_problems(node, children)
        elif children:
            grandchildren = [g.path for g in tree.children(children[0])]
            blockers += self._merge_problems(node.path, grandchildren)
        for child in children:
            if child.error:
                blockers.append(f"{child.path} depends on {base} but cannot be read: {child.error}")
            problem = path_problem(child.path, "a file depending on the snapshot")
            if problem:
                blockers.append(problem)
        leaf = os.path.abspath(snapshot.path)
        if self.live and node in tree.ancestors(leaf):
            blockers += self._live_blockers(leaf)
        return blockers

    def delete(self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]) -> bool:
        """Merge the snapshot's base away; every other snapshot and the current data are kept.
        Idempotent: an interrupted delete is finished by running it again."""
        base = os.path.abspath(snapshot.locator)
        leaf = os.path.abspath(snapshot.path)
        journal = base + JOURNAL_SUFFIX
        hold = self.live and os.path.exists(leaf)
        if os.path.exists(journal):
            with self._held(leaf, hold):
                self._resume(journal)
        if os.path.lexists(base):
            tree = self._tree(snapshot, others)
            node = tree.node(base)
            if node is not None:
                if node.error:
                    raise self._error(node.error)
                if node.raw:
                    raise self._error(f"{base} is a raw file, not a VHD snapshot; not merged")
                foreign = self._foreign_children(tree, node, snapshot, others)
                if foreign:
                    raise self._error("; ".join(foreign))
                in_chain = node in tree.ancestors(leaf)
                with self._held(leaf, hold and in_chain):
                    self._delete_node(tree, node)
        self._collect(snapshot, others)
        return True

    def _delete_node(self, tree: Tree, node: Node) -> None:
        children = tree.children(node)
        if not children:
            self._step("delete", f"unlink {node.path}: no file depends on it")
            _remove(node.path)
        elif len(children) == 1:
            child = children[0]
            grandchildren = [g.path for g in tree.children(child)]
            # the file the child's name resolves to takes the merged base's place: a disk
            # named through a symlink keeps its symlink
            self._merge(node.path, os.path.realpath(child.path), grandchildren, child.hidden)
        else:
            self._retire(node, children)

    def _merge_problems(self, node: str, grandchildren: Iterable[str]) -> list[str]:
        """Why the files depending on the child of *node* cannot be moved over to *node*
        through its second name :func:`merge_link` during the merge: the name is not one
        vhd-util may be given, or their parent locators have no room for it (blktap rewrites
        them in place)."""
        link = merge_link(node)
        problem = path_problem(link, "the merged base's second name")
        if problem:
            return [problem]
        problems: list[str] = []
        for grandchild in grandchildren:
            problems += ops.relink_problems(grandchild, link)
        return problems

    def _merge(self, node: str, child: str, grandchildren: list[str], hidden: bool) -> None:
        problems = self._merge_problems(node, grandchildren)
        if problems:
            raise self._error("; ".join(problems))
        journal = node + JOURNAL_SUFFIX
        data = {"node": node, "child": child, "grandchildren": grandchildren, "hidden": hidden}
        tmp = journal + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, journal)
        _fsync_dir(journal)
        self._resume(journal)

    def _resume(self, journal: str) -> None:
        """Carry out (or finish) the merge journaled in *journal*, then remove it.

        The base ``N`` (*node*) absorbs its one child ``C`` and takes its place; ``C``'s
        children ``G`` are moved over to it without a moment where one of them names a file
        whose UUID is not the one it records:

        1. ``coalesce -n C``: ``N`` holds ``C``'s view (``C`` reads the same over it);
        2. ``N`` gets ``C``'s hidden flag and file mode;
        3. ``N`` gets a second name ``L`` (:func:`merge_link`, a hard link), and each ``G``
           is relinked to ``L`` (``modify -p``: ``N``'s UUID; ``G`` reads the same through
           ``N`` alone as through ``C`` and ``N``);
        4. ``N`` is renamed onto ``C``'s path: the commit point, ``C`` is gone;
        5. each ``G`` is relinked from ``L`` to ``C``'s path: the same file and UUID, another
           name;
        6. ``L`` and the journal are removed.

        Each step is atomic (the native relink is; a failing vhd-util one is put back) and
        finds out from the files whether it was done already, so a merge interrupted
        anywhere is finished by running this again. The merged file keeps ``N``'s UUID:
        nothing needs ``C``'s any more at the commit point.
        """
        with open(journal, encoding="utf-8") as f:
            data = json.load(f)
        node, child = str(data["node"]), str(data["child"])
        grandchildren = [str(g) for g in data["grandchildren"]]
        link = merge_link(node)
        for p in (node, child, link, *grandchildren):
            problem = path_problem(p, "a file of the merge")
            if problem:
                raise self._error(f"journal {journal}: {problem}")
        if os.path.exists(node) and not _same_file(node, child):
            present = [g for g in grandchildren if os.path.exists(g)]
            moved = [g for g in present if _names_parent(g, node, by_name=False)]
            if not present or len(moved) < len(present):
                self._step("delete", f"merge {child} into {node}, which then takes its place")
                self.engine.coalesce(child)
            self.engine.set_hidden(node, bool(data["hidden"]))
            _copy_mode(child, node)
            if present:
                self._second_name(node, link)
            for grandchild in present:
                if grandchild not in moved:
                    self._step("delete", f"relink {grandchild} to {node} (as {link})")
                    self.engine.set_parent(grandchild, link)
            os.replace(node, child)
            _fsync_dir(child)
        for grandchild in grandchildren:
            if os.path.exists(grandchild) and not _names_parent(grandchild, child, by_name=True):
                self._step("delete", f"relink {grandchild} to {child}")
                self.engine.set_parent(grandchild, child)
        if os.path.lexists(link):
            _remove(link)
        _remove(journal)

    @staticmethod
    def _second_name(node: str, link: str) -> None:
        """Make *link* a second name of *node* (a name left by an earlier run that is not one
        is replaced)."""
        if os.path.lexists(link):
            if _same_file(link, node):
                return
            _remove(link)
        os.link(node, link)
        _fsync_dir(link)

    def _retire_problems(self, node: Node, children: list[Node]) -> list[str]:
        """Why *node* cannot be kept for its *children* under its retired name: the name is
        too long for the file system, or the children's parent locators have no room for it
        (blktap rewrites them in place)."""
        keep = retired_path(node)
        problems: list[str] = []
        size = len(os.fsencode(os.path.basename(keep)))
        if size > NAME_MAX:
            problems.append(
                f"{node.path} is needed by {len(children)} files and would be kept as {keep}, "
                f"a name of {size} bytes; at most {NAME_MAX}"
            )
            return problems
        problem = path_problem(keep, "the kept base")
        if problem:
            problems.append(problem)
        for child in children:
            problems += ops.relink_problems(child.path, keep)
        return problems

    def _retire(self, node: Node, children: list[Node]) -> None:
        """Keep *node* for its children as ``<stem>.base-<uuid>.vhd``: a second name (hard
        link), the children relinked to it, the old name removed. If a relink fails, the
        children already relinked go back to the old name and the second name is removed, so
        the failed delete leaves no ``base-<uuid>`` link behind."""
        keep = retired_path(node)
        problems = self._retire_problems(node, children)
        if problems:
            raise self._error("; ".join(problems))
        self._step("delete", f"{node.path} is needed by {len(children)} files: kept as {keep}")
        if not os.path.lexists(keep):
            os.link(node.path, keep)
            _fsync_dir(keep)
        elif not _same_file(keep, node.path):
            raise self._error(f"{keep} exists and is another file")
        relinked: list[Node] = []
        try:
            for child in children:
                self.engine.set_parent(child.path, keep)
                relinked.append(child)
        except BaseException:
            try:
                for child in reversed(relinked):
                    self.engine.set_parent(child.path, node.path)
                remove_stray_links(os.path.dirname(keep))
            except Exception:
                self.log.exception("disk %s: undoing the kept base %s failed", self.vdev, keep)
            raise
        _remove(node.path)

    def _collect(self, snapshot: DiskSnapshot, others: Sequence[DiskSnapshot]) -> None:
        """Merge or unlink kept bases (``*.base-UUID.vhd``) left with one child or none."""
        leaf = os.path.abspath(snapshot.path)
        for _ in range(_MAX_GC_ROUNDS):
            tree = self._tree(snapshot, others)
            mine = self._mine(tree, snapshot, others)
            retired = [
                n
                for n in tree.nodes.values()
                if n.key in mine
                and RETIRED_INFIX in os.path.basename(n.path)
                and n.error is None
                and n.hidden
                and all(c.key in mine for c in tree.children(n))
            ]
            for journal in {n.path + JOURNAL_SUFFIX for n in retired}:
                if os.path.exists(journal):
                    self._resume(journal)
            done = False
            for node in retired:
                if len(tree.children(node)) <= 1 and os.path.exists(node.path):
                    in_chain = node in tree.ancestors(leaf)
                    with self._held(leaf, self.live and in_chain and os.path.exists(leaf)):
                        self._delete_node(tree, node)
                    done = True
                    break
            if not done:
                return

    # -- list -------------------------------------------------------------------------------

    def _check_chain(self, tree: Tree, leaf: str) -> None:
        node = tree.node(leaf)
        visited: set[tuple[int, int]] = set()
        while node is not None and node.key not in visited:
            visited.add(node.key)
            if node.error:
                raise self._error(f"the chain of {leaf} is broken: {node.error}")
            if node.parent_path is None:
                return
            if not os.path.exists(node.parent_path):
                raise self._error(
                    f"the chain of {leaf} is broken: {node.path} names the parent "
                    f"{node.parent_path}, which is missing"
                )
            node = tree.nodes.get(node.parent) if node.parent else None

    def list_snapshots(self, disk: Disk, known: Sequence[DiskSnapshot]) -> list[DiskSnapshot]:
        """The bases in the leaf's chain, and the recorded snapshots whose base exists.

        :raises BackendError: the leaf's chain is broken (a file in it cannot be read, or its
            parent is missing).
        """
        leaf = os.path.abspath(disk.path)
        recorded = {_key(k.locator): k for k in known if _key(k.locator) is not None}
        tree = Tree([leaf, *(k.locator for k in known)])
        self._check_chain(tree, leaf)
        out: list[DiskSnapshot] = []
        seen: set[tuple[int, int]] = set()
        candidates = tree.ancestors(leaf) + [
            n for k in known if (n := tree.node(k.locator)) is not None
        ]
        for node in candidates:
            if node.key in seen or node.error or node.raw or node.key == _key(leaf):
                continue
            seen.add(node.key)
            record = recorded.get(node.key)
            if record is None and node.hidden and RETIRED_INFIX in os.path.basename(node.path):
                continue  # a base kept for its children after its snapshot's delete
            out.append(
                DiskSnapshot(
                    vdev=disk.vdev,
                    path=disk.path,
                    driver=DRIVER,
                    kind=SnapshotKind.EXTERNAL,
                    name=record.name if record else os.path.basename(node.path),
                    locator=record.locator if record else node.path,
                    size=node.size,
                )
            )
        return out


def _folders(disk: Disk, known: Sequence[DiskSnapshot]) -> list[str]:
    paths = [disk.path, *(k.locator for k in known)]
    return list(dict.fromkeys(os.path.dirname(os.path.abspath(p)) for p in paths))


def verify(disk: Disk, known: Sequence[DiskSnapshot]) -> list[str]:
    """What is wrong on the storage of *disk* (the ``disk_verify`` hook); reads only."""
    leaf = os.path.abspath(disk.path)
    problems: list[str] = []
    files = [leaf] + [os.path.abspath(k.locator) for k in known if os.path.lexists(k.locator)]
    for path in dict.fromkeys(files):
        problems += [f"{path}: {p}" for p in ops.check(path, parents=True)]
    for snap in known:
        if os.path.lexists(snap.locator) and _same_file(snap.locator, leaf):
            problems.append(
                f"{snap.locator}, the base of snapshot {snap.name!r}, is the disk's own leaf "
                f"{leaf}: writing the disk would change the snapshot"
            )
    for folder in _folders(disk, known):
        problems += [
            f"{p} is a stray second name of a base (left by a failed delete); "
            "'snapcore check --repair' removes it"
            for p in stray_links(folder)
        ]
    problems += [
        f"{p} is a scratch file left by an interrupted command"
        for p in scratch_files(leaf, TMP_SUFFIX)
    ]
    return problems


def repair(disk: Disk, known: Sequence[DiskSnapshot]) -> list[str]:
    """Remove what :func:`verify` finds that holds no data of its own (the ``disk_repair``
    hook): stray kept-base names and scratch files. Only under the disk's lock."""
    done: list[str] = []
    for folder in _folders(disk, known):
        done += [f"removed {p}, a stray second name of a base" for p in remove_stray_links(folder)]
    for scratch in scratch_files(os.path.abspath(disk.path), TMP_SUFFIX):
        _remove(scratch)
        done.append(f"removed {scratch}, a scratch file left by an interrupted command")
    return done


def unsupported(message: str, vdev: str) -> UnsupportedOperationError:
    return UnsupportedOperationError(message, driver=DRIVER, vdev=vdev)
