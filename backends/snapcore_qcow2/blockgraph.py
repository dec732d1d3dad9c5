"""QEMU's block graph as the qcow2 backend reads it, and the names it gives QEMU's objects.

**How a disk is found in QEMU.** The block device whose active node's file is ``P``, or whose
active node reads an fd set marked (``opaque``) with ``P``: the overlays this backend adds are
opened through fd sets (see :mod:`snapcore_qcow2.live`), and the mark is how a later command,
in this process or another, finds them again. Its backing chain comes from
``x-debug-query-block-graph``, the only query that names each node's backing node on 7.2.

Everything here reads (:class:`BlockView`: four queries) or names (:func:`node_name`,
:func:`fdset_mark`); only :func:`add_fd` changes QEMU.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from snapcore.errors import BackendError
from snapcore_qcow2.offline import DRIVER
from snapcore_qcow2.qemu_img import ImageInfo
from snapcore_qemu.qmp import QMPCommandError, QMPSession

#: First word of the ``opaque`` string of the fd sets this backend adds.
FDSET_MARK: Final = "snapcore"
#: The file name QEMU gives a node opened from fd set N is this prefix and N.
FDSET_PREFIX: Final = "/dev/fdset/"
#: QEMU's longest node name.
NODE_NAME_MAX: Final = 31


def _real(path: str) -> str:
    return os.path.realpath(path)


def digest(*parts: str) -> str:
    """A hex digest of *parts*: the same on every run, for names a later run finds again."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def node_name(vdev: str, name: str, taken: Container[str] = ()) -> str:
    """A QEMU node name for the overlay of snapshot *name* of disk *vdev*, not in *taken*.

    ``snap-<vdev>-<hash>``: at most 31 characters, starting with a letter, of letters,
    digits, ``-`` and ``_`` (vdev names use no others).
    """
    stem = f"snap-{vdev[:12]}-"
    for n in range(1000):
        candidate = stem + digest(vdev, name, str(n))[:10]
        if candidate not in taken:
            assert len(candidate) <= NODE_NAME_MAX
            return candidate
    raise BackendError(f"no free QEMU node name for snapshot {name!r}", driver=DRIVER, vdev=vdev)


def fdset_mark(vdev: str, name: str, path: str) -> str:
    """The ``opaque`` string of the fd set holding the overlay of snapshot *name* of disk
    *vdev* whose image is (or becomes) *path*."""
    return f"{FDSET_MARK}:{vdev}:{name}:{_real(path)}"


def _mark_path(opaque: str) -> str | None:
    parts = opaque.split(":", 3)
    if len(parts) == 4 and parts[0] == FDSET_MARK:
        return parts[3]
    return None


def add_fd(qmp: QMPSession, fd: int, opaque: str) -> int:
    """Give QEMU a copy of descriptor *fd* in a new fd set (QMP ``add-fd``); return its id."""
    return qmp.add_fd(fd, opaque=opaque)


# -- what QEMU has open ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """One format node of QEMU's block graph."""

    name: str
    driver: str
    read_only: bool
    #: The file name of its protocol node: a path, or ``/dev/fdset/N``.
    filename: str
    tags: tuple[str, ...]
    virtual_size: int
    #: The node name of its backing node.
    backing: str | None
    #: The backing file its image's header names (QEMU's view of the header).
    backing_filename: str | None = None
    cache: Mapping[str, Any] = field(default_factory=dict)
    detect_zeroes: str = "off"
    #: QEMU's ``ImageInfo`` of the node's image (tags, corrupt flag, ...), if it gave one.
    image: ImageInfo | None = None

    @property
    def fdset(self) -> int | None:
        """The fd set its file was opened from, if any."""
        if self.filename.startswith(FDSET_PREFIX):
            with contextlib.suppress(ValueError):
                return int(self.filename[len(FDSET_PREFIX) :])
        return None


@dataclass(frozen=True, slots=True)
class Device:
    """A block device of the guest and the chain of nodes under it, active node first."""

    name: str
    chain: tuple[Node, ...]

    @property
    def top(self) -> Node:
        return self.chain[0]


class BlockView:
    """QEMU's block devices, nodes and fd sets, read at one moment (four queries)."""

    def __init__(self, qmp: QMPSession):
        blocks = qmp.execute("query-block")
        infos = {n["node-name"]: n for n in qmp.execute("query-named-block-nodes", {"flat": True})}
        try:
            graph = qmp.execute("x-debug-query-block-graph")
        except QMPCommandError as exc:
            raise BackendError(
                f"QEMU cannot show its block graph (x-debug-query-block-graph): {exc.desc}",
                driver=DRIVER,
            ) from exc
        names = {n["id"]: n["name"] for n in graph["nodes"]}
        children: dict[str, dict[str, str]] = {}
        for edge in graph["edges"]:
            parent, child = names.get(edge["parent"]), names.get(edge["child"])
            if parent is not None and child is not None:
                children.setdefault(parent, {})[edge["name"]] = child
        self.fdsets: dict[int, list[str]] = {
            int(s["fdset-id"]): [str(f.get("opaque", "")) for f in s.get("fds", [])]
            for s in qmp.execute("query-fdsets")
        }
        self.nodes: dict[str, Node] = {}
        for node, info in infos.items():
            kids = children.get(node, {})
            protocol = infos.get(kids.get("file", ""), info)
            image = info.get("image") or {}
            self.nodes[node] = Node(
                name=node,
                driver=str(info.get("drv", "")),
                read_only=bool(info.get("ro")),
                filename=str(protocol.get("file", "")),
                tags=tuple(s["name"] for s in image.get("snapshots") or ()),
                virtual_size=int(image.get("virtual-size", 0)),
                backing=kids.get("backing"),
                backing_filename=image.get("backing-filename"),
                cache=dict(info.get("cache") or {}),
                detect_zeroes=str(info.get("detect_zeroes", "off")),
                image=_image_info(image),
            )
        # the format node that reads each fd set
        self.fdset_nodes: dict[int, str] = {}
        for parent, kids in children.items():
            file_node = self.nodes.get(kids.get("file", ""))
            if file_node is not None and file_node.fdset is not None and parent in self.nodes:
                self.fdset_nodes[file_node.fdset] = parent
        self.devices: list[Device] = []
        for block in blocks:
            inserted = block.get("inserted")
            if not inserted:
                continue
            chain: list[Node] = []
            name: str | None = inserted.get("node-name")
            while name is not None and name in self.nodes and len(chain) < 1000:
                chain.append(self.nodes[name])
                name = self.nodes[name].backing
            if chain:
                self.devices.append(
                    Device(block.get("device") or block.get("qdev", ""), tuple(chain))
                )

    def file_of(self, node: Node) -> str | None:
        """The real path of the image *node* reads when QEMU tells it: its file name, or the
        path in the mark of our fd set. Beware: a path-opened node may have been renamed."""
        fdset = node.fdset
        if fdset is None:
            return _real(node.filename) if node.filename.startswith("/") else None
        for opaque in self.fdsets.get(fdset, ()):
            path = _mark_path(opaque)
            if path is not None:
                return path
        return None

    def device_for(self, path: str) -> Device | None:
        """The device whose active image is *path*."""
        real = _real(path)
        for device in self.devices:
            if self.file_of(device.top) == real:
                return device
        return None

    def in_chains(self) -> set[str]:
        return {node.name for device in self.devices for node in device.chain}

    def marked(self, vdev: str, name: str) -> list[int]:
        """The fd sets this backend added for snapshot *name* of disk *vdev*."""
        prefix = f"{FDSET_MARK}:{vdev}:{name}:"
        return [
            fdset
            for fdset, opaques in self.fdsets.items()
            if any(o.startswith(prefix) for o in opaques)
        ]


def _image_info(data: Mapping[str, Any]) -> ImageInfo | None:
    try:
        return ImageInfo.from_json(data) if data else None
    except (KeyError, TypeError, ValueError):
        return None
