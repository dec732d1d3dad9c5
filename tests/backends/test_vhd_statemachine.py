"""A hypothesis state machine over the native VHD engine, checked against an in-memory model.

Rules: writes of any offset and length (sub-sector, block-straddling, zeros), snapshots (the
leaf gets a child and keeps its data frozen), coalescing an inner node into its parent with its
child relinked to the parent (the snapshot delete of the storage backend), closing and
reopening the leaf, and reads of random ranges. After every step: every file checks clean, the
leaf and every inner node read exactly their model, each file's size is its end of data plus
the footer, and no bitmap bit is set for a sector that was never written into that file.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from snapcore_vhd import ops
from snapcore_vhd.chain import Chain
from snapcore_vhd.format import BAT_UNUSED, SECTORS_PER_BLOCK
from snapcore_vhd.image import VhdImage, bit_runs
from snapcore_vhd.names import SECTOR

MiB = 1024 * 1024
SIZE = 8 * MiB
BLOCK = 2 * MiB
SECTORS = SIZE // SECTOR

#: Offsets that matter: sector edges, block edges and the disk's end, plus anywhere.
offsets = st.one_of(
    st.integers(0, SIZE - 1),
    st.sampled_from([0, 1, 511, 512, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK - 700, SIZE - 1]),
)


class VhdChainMachine(RuleBasedStateMachine):
    """A chain base <- n1 <- ... <- leaf, written and reshaped at random."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="vhd-sm-")
        self.serial = 0
        base = self._new_name()
        ops.create_dynamic(base, SIZE)
        #: the chain, base first; the last is the leaf
        self.nodes: list[str] = [base]
        #: the data each node shows (inner nodes: frozen when they got a child)
        self.views: dict[str, bytes] = {}
        self.model = bytearray(SIZE)
        #: per node, one flag a sector: written into this very file
        self.written: dict[str, bytearray] = {base: bytearray(SECTORS)}
        self.chain: Chain | None = None

    def _new_name(self) -> str:
        self.serial += 1
        return os.path.join(self.dir, f"n{self.serial}.vhd")

    @property
    def leaf(self) -> str:
        return self.nodes[-1]

    def _open(self) -> Chain:
        if self.chain is None:
            self.chain = Chain(self.leaf, writable=True)
        return self.chain

    def _close(self) -> None:
        if self.chain is not None:
            self.chain.close()
            self.chain = None

    def teardown(self) -> None:
        self._close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- rules ------------------------------------------------------------------------------

    @rule(offset=offsets, length=st.integers(1, 3 * BLOCK // 2), seed=st.integers(0, 255))
    def write(self, offset: int, length: int, seed: int) -> None:
        length = min(length, SIZE - offset)
        data = bytes((seed + i) % 251 for i in range(min(length, 4096))) * (length // 4096 + 1)
        data = data[:length]
        self._open().write(offset, data)
        self.model[offset : offset + length] = data
        flags = self.written[self.leaf]
        first, last = offset // SECTOR, -(-(offset + length) // SECTOR)
        flags[first:last] = b"\x01" * (last - first)

    @rule(offset=offsets, length=st.integers(1, 70000))
    def write_zeros(self, offset: int, length: int) -> None:
        length = min(length, SIZE - offset)
        self._open().write(offset, bytes(length))
        self.model[offset : offset + length] = bytes(length)
        first, last = offset // SECTOR, -(-(offset + length) // SECTOR)
        self.written[self.leaf][first:last] = b"\x01" * (last - first)

    @precondition(lambda self: len(self.nodes) < 6)
    @rule()
    def snapshot(self) -> None:
        self._close()
        child = self._new_name()
        ops.snapshot(child, self.leaf)
        self.views[self.leaf] = bytes(self.model)
        self.nodes.append(child)
        self.written[child] = bytearray(SECTORS)

    @precondition(lambda self: len(self.nodes) >= 3)
    @rule(data=st.data())
    def coalesce_inner(self, data: st.DataObject) -> None:
        """Merge inner node C into its parent P, relink C's child to P, remove C."""
        self._close()
        i = data.draw(st.integers(1, len(self.nodes) - 2), label="inner node")
        parent, node, child = self.nodes[i - 1], self.nodes[i], self.nodes[i + 1]
        ops.coalesce(node)
        ops.set_parent(child, parent)
        os.unlink(node)
        self.views[parent] = self.views.pop(node)
        flags = self.written.pop(node)
        merged = self.written[parent]
        for s in range(SECTORS):
            if flags[s]:
                merged[s] = 1
        del self.nodes[i]

    @rule()
    def reopen(self) -> None:
        self._close()
        self._open()

    @rule(offset=offsets, length=st.integers(0, BLOCK + 1000))
    def read(self, offset: int, length: int) -> None:
        got = self._open().read(offset, length)
        assert got == bytes(self.model[offset : offset + length])

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def leaf_reads_the_model(self) -> None:
        assert self._open().read(0, SIZE) == bytes(self.model)

    @invariant()
    def inner_nodes_keep_their_data(self) -> None:
        for node in self.nodes[:-1]:
            with Chain(node) as chain:
                assert chain.read(0, SIZE) == self.views[node], f"{node} changed"

    @invariant()
    def every_file_checks_clean(self) -> None:
        self._close()
        for node in self.nodes:
            assert ops.check(node) == [], node
            with VhdImage(node) as image:
                assert image.physical_size == os.path.getsize(node)

    @invariant()
    def bitmap_bits_only_for_written_sectors(self) -> None:
        for node in self.nodes:
            flags = self.written[node]
            with VhdImage(node) as image:
                for block, entry in enumerate(image.bat):
                    if entry == BAT_UNUSED:
                        continue
                    base = block * SECTORS_PER_BLOCK
                    runs = bit_runs(image.bitmap(block), 0, SECTORS_PER_BLOCK)
                    for a, z, present in runs:
                        if present:
                            assert all(flags[base + a : base + z]), f"{node} block {block}"


VhdChainMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestVhdChain = VhdChainMachine.TestCase
