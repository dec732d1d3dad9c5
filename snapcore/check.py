"""``snapcore check``: reconcile a domain's records with its storage.

What is checked, for one domain, under its lock (no recovery is run first, so what an
interrupted command left is seen as it is):

* the journal can be read, and says whether an operation was interrupted;
* every checkpoint record and ``current.json`` can be read;
* no temporary file of a killed write is left in the state dir;
* every recorded disk snapshot still exists on its storage (the driver's ``disk_snapshot_list``);
* every snapshot the storage holds is on record (one that is not is reported, never removed);
* every disk's images pass their format's check, and no checkpoint file is a live disk's inode
  (the driver's ``disk_verify``).

Read-only by default. With ``repair``, only what is safe is done, and the report says what was:
an interrupted operation is recovered (as ``snapcore recover`` would), an unreadable journal,
record or ``current.json`` is moved aside (never deleted), leftover temporary files are
removed, and the driver repairs what loses no data (``disk_repair``, the domain shut off). A
snapshot missing from storage, or one on storage but not on record, is reported and left: no
peer tool guesses there either, and only an operator knows which side is right.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from snapcore.errors import SnapcoreError, StoreCorruptError
from snapcore.model import JSON, DiskSnapshot, DomainState, SnapshotKind

if TYPE_CHECKING:
    from snapcore.coordinator import Coordinator


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing ``snapcore check`` found wrong.

    :ivar subject: what it is about (``journal``, ``record NAME``, ``disk vda``, ``state dir``).
    :ivar problem: a sentence saying what is wrong.
    :ivar repaired: what ``--repair`` did about it, or ``None`` when it was left.
    """

    subject: str
    problem: str
    repaired: str | None = None

    def to_json(self) -> dict[str, JSON]:
        return {"subject": self.subject, "problem": self.problem, "repaired": self.repaired}


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What ``snapcore check`` found for one domain.

    :ivar repairs: what ``--repair`` did that no finding stands for (a repair of leaked
        clusters the driver found and fixed in one go, say).
    """

    domain: str
    findings: tuple[Finding, ...] = ()
    repairs: tuple[str, ...] = ()
    checkpoints: int = 0

    @property
    def clean(self) -> bool:
        """Nothing is wrong any more (every finding was repaired)."""
        return all(f.repaired for f in self.findings)

    def to_json(self) -> dict[str, JSON]:
        return {
            "domain": self.domain,
            "clean": self.clean,
            "checkpoints": self.checkpoints,
            "findings": [f.to_json() for f in self.findings],
            "repairs": list(self.repairs),
        }


@dataclass
class _Check:
    co: Coordinator
    repair: bool
    findings: list[Finding] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)

    def found(self, subject: str, problem: str, repaired: str | None = None) -> None:
        self.findings.append(Finding(subject, problem, repaired))

    def run(self) -> CheckReport:
        co = self.co
        leftovers = co.store.leftover_temp_files()  # taking the lock removes them: look first
        with co.store.lock(co.lock_timeout), co._hold_images(), co._session():
            for path in leftovers:
                self.found(
                    "state dir",
                    f"{path} is a temporary file a killed write left",
                    "removed" if not path.exists() else None,
                )
            self._journal()
            self._records()
            checkpoints = self._checkpoints()
            self._storage(checkpoints)
        return CheckReport(
            domain=co.domain.name,
            findings=tuple(self.findings),
            repairs=tuple(self.repairs),
            checkpoints=len(checkpoints),
        )

    def _journal(self) -> None:
        co = self.co
        try:
            entry = co.journal.pending()
        except StoreCorruptError as exc:
            moved = co.journal.quarantine() if self.repair else None
            self.found("journal", str(exc.reason), f"moved aside to {moved}" if moved else None)
            return
        if entry is None:
            return
        what = f"an interrupted {entry.operation} of snapshot {entry.name!r}"
        done = None
        if self.repair:
            try:
                done = co._recover_pending()
            except SnapcoreError as exc:
                self.found("journal", f"{what} is pending; recovering it failed: {exc}")
                return
        self.found("journal", f"{what} is pending", done)

    def _records(self) -> None:
        unreadable = self.co.store.unreadable()
        moved: dict[str, str] = {}
        if self.repair and unreadable:
            moved = {str(a): str(b) for a, b in self.co.store.quarantine_unreadable() if b}
        for exc in unreadable:
            target = moved.get(exc.path)
            self.found(
                f"{exc.what} {exc.path}",
                f"unreadable: {exc.reason}",
                f"moved aside to {target}" if target else None,
            )

    def _checkpoints(self) -> list[list[DiskSnapshot]]:
        """Every readable record's disk snapshots."""
        out = []
        try:
            checkpoints = self.co.store.list()
        except SnapcoreError:
            return []  # reported by _records
        for cp in checkpoints:
            out.append(list(cp.disks))
        return out

    def _storage(self, checkpoints: list[list[DiskSnapshot]]) -> None:
        co = self.co
        try:
            state = co.state()
        except SnapcoreError as exc:
            self.found("domain", f"its state cannot be read: {exc}")
            return
        ctx = co._ctx(state)
        by_vdev: dict[str, list[DiskSnapshot]] = {}
        for disks in checkpoints:
            for snap in disks:
                by_vdev.setdefault(snap.vdev, []).append(snap)
        for listed_disk in co.domain.disks:
            if listed_disk.readonly:
                continue
            known = by_vdev.pop(listed_disk.vdev, [])
            try:
                disk = co.plugins.resolve_disk(listed_disk)
            except SnapcoreError as exc:
                self.found(f"disk {listed_disk.vdev}", str(exc))
                continue
            assert disk.driver is not None
            backend = co.plugins.storage(disk.driver, vdev=disk.vdev, path=disk.path)
            try:
                listed = backend.disk_snapshot_list(disk=disk, known=known, ctx=ctx)
            except SnapcoreError as exc:
                self.found(f"disk {disk.vdev}", f"its snapshots cannot be listed: {exc}")
                listed = None
            if listed is not None:
                self._compare(disk.vdev, known, listed)
            try:
                if self.repair and state is DomainState.SHUTOFF:
                    self.repairs += [
                        f"disk {disk.vdev}: {r}"
                        for r in backend.disk_repair(disk=disk, known=known, ctx=ctx)
                    ]
                problems = backend.disk_verify(disk=disk, known=known, ctx=ctx)
            except SnapcoreError as exc:
                self.found(f"disk {disk.vdev}", f"its images cannot be verified: {exc}")
                continue
            for problem in problems or ():
                self.found(f"disk {disk.vdev}", problem)
        for vdev, snaps in sorted(by_vdev.items()):
            names = ", ".join(sorted({s.name for s in snaps}))
            self.found(
                f"disk {vdev}",
                f"checkpoints {names} hold a snapshot of it, but the domain file has no such "
                "disk any more",
            )

    def _compare(self, vdev: str, known: list[DiskSnapshot], listed: list[DiskSnapshot]) -> None:
        def key(s: DiskSnapshot) -> tuple[SnapshotKind, str]:
            return (s.kind, s.name if s.kind is SnapshotKind.INTERNAL else s.locator)

        present = {key(s) for s in listed}
        recorded = {key(s) for s in known}
        for snap in known:
            if key(snap) not in present:
                self.found(
                    f"disk {vdev}",
                    f"the {snap.kind} snapshot of checkpoint {snap.name!r} ({snap.locator}) "
                    "is gone from storage; left for an operator (delete the checkpoint, or "
                    "put the snapshot back)",
                )
        for snap in listed:
            if key(snap) not in recorded:
                self.found(
                    f"disk {vdev}",
                    f"the {snap.kind} snapshot {snap.name!r} ({snap.locator}) is on storage "
                    "but in no checkpoint; left alone (snapcore may not have made it)",
                )


def check_domain(co: Coordinator, *, repair: bool = False) -> CheckReport:
    """Reconcile *co*'s domain's records with its storage (see the module docstring).

    Failure guarantee: without *repair* nothing is changed, but for the temporary files a
    killed write left, which taking the domain's lock removes anyway (reported as removed).

    :raises StoreLockedError: another command holds the domain (exit 4).
    """
    return _Check(co, repair).run()


def iter_problems(report: CheckReport) -> Iterator[str]:
    """One line per finding not repaired, for a human."""
    for f in report.findings:
        if not f.repaired:
            yield f"{report.domain}: {f.subject}: {f.problem}"
