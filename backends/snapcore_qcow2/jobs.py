"""QEMU block jobs, run to their end: ``block-stream`` and ``block-commit`` of the live
qcow2 operations.

A job's id is derived from what it does (:func:`job_id`), so a command run after a crash finds
the job an earlier one started and waits for it instead of starting a second. One graph change
runs at a time per QEMU (:func:`job_lock`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, Final

from snapcore.context import ProgressCallback
from snapcore.errors import BackendError, DomainUnreachableError
from snapcore.model import ProgressEvent
from snapcore_qcow2.blockgraph import digest
from snapcore_qcow2.offline import DRIVER
from snapcore_qemu.qmp import QMPSession

#: Seconds between two looks at a running block job (an event wakes the wait earlier).
JOB_POLL: Final = 0.5

# One graph change at a time per QEMU: QEMU 7.2 was seen to crash (segfault) when one disk's
# block-stream job ran while another disk's graph was read or changed. A live delete (its
# queries, its job and the closing of its nodes) holds this lock from start to end, so the
# disks of one domain are merged one after the other.
_JOB_LOCKS: dict[str, threading.RLock] = {}
_JOB_LOCKS_GUARD = threading.Lock()


def job_lock(address: str) -> threading.RLock:
    """The lock of the QEMU whose monitor is at *address* (re-entrant: a delete holding it
    runs jobs under it)."""
    with _JOB_LOCKS_GUARD:
        return _JOB_LOCKS.setdefault(address, threading.RLock())


def job_id(operation: str, vdev: str, name: str) -> str:
    """The QEMU job id of *operation* (``abort``, ``delete``) on snapshot *name* of *vdev*:
    the same on every run, so a run after a crash finds the job an earlier run started."""
    return f"snapcore-{operation}-{digest(vdev, name)[:16]}"


def find_job(qmp: QMPSession, job: str) -> dict[str, Any] | None:
    """QEMU's ``query-jobs`` entry of *job*, or ``None``."""
    for found in qmp.execute("query-jobs"):
        if found.get("id") == job:
            return dict(found)
    return None


def run_job(
    qmp: QMPSession,
    job: str,
    start: Callable[[], object],
    *,
    step: str,
    vdev: str,
    progress: ProgressCallback,
    complete: bool = False,
) -> None:
    """Start block job *job* with *start* (unless one of that id runs already, from an
    interrupted run), report its progress for disk *vdev* as *step*, complete it when
    *complete* and it is ready, wait until it concludes, and dismiss it.

    :raises BackendError: when the job ends with an error or disappears.
    """

    def error(message: str) -> BackendError:
        return BackendError(message, driver=DRIVER, vdev=vdev)

    with job_lock(qmp.address), qmp.events("JOB_STATUS_CHANGE") as waiter:
        if find_job(qmp, job) is None:
            start()
        completing = False
        while True:
            found = find_job(qmp, job)
            if found is None:
                raise error(f"QEMU's job {job} disappeared before it concluded")
            status = found.get("status")
            kind = found.get("type", "block")
            progress(
                ProgressEvent(
                    step=step,
                    vdev=vdev,
                    done=int(found.get("current-progress", 0)),
                    total=int(found.get("total-progress", 0)),
                    message=f"{kind} job {status}",
                    unit="bytes",
                )
            )
            if status == "ready" and complete and not completing:
                qmp.execute("job-complete", {"id": job})
                completing = True
            elif status == "concluded":
                job_error = found.get("error")
                qmp.execute("job-dismiss", {"id": job})
                if job_error:
                    raise error(f"QEMU's {kind} job failed: {job_error}")
                return
            with contextlib.suppress(DomainUnreachableError):  # no event in time: look
                waiter.get(JOB_POLL, match=lambda e: e.get("data", {}).get("id") == job)
