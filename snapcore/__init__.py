"""snapcore: consistent snapshots of whole virtual machines on mixed storage.

The public API: open a domain through a :class:`Host`, then create, list, revert and delete
its checkpoints through the :class:`DomainHandle`; plugin authors use :data:`hookimpl`, the
models and :class:`HookContext`. See ``docs/api.md`` and ``docs/plugin-guide.md``.
"""

from snapcore._version import __version__
from snapcore.api import DomainHandle, Host
from snapcore.context import HookContext
from snapcore.errors import (
    CommandError,
    ConfigError,
    OperationFailedError,
    PartialCheckpointError,
    SnapcoreError,
    SnapshotNotFoundError,
)
from snapcore.hookspecs import HOOK_API_VERSION, hookimpl
from snapcore.model import (
    BackendInfo,
    Checkpoint,
    CheckpointView,
    CreateOptions,
    Disk,
    DiskChoice,
    DiskSnapshot,
    Domain,
    DomainState,
    HypervisorInfo,
    MemoryImage,
    Plan,
    PlanStep,
    ProgressEvent,
    SnapshotKind,
    SnapshotRequest,
)

__all__ = [
    "HOOK_API_VERSION",
    "BackendInfo",
    "Checkpoint",
    "CheckpointView",
    "CommandError",
    "ConfigError",
    "CreateOptions",
    "Disk",
    "DiskChoice",
    "DiskSnapshot",
    "Domain",
    "DomainHandle",
    "DomainState",
    "HookContext",
    "Host",
    "HypervisorInfo",
    "MemoryImage",
    "OperationFailedError",
    "PartialCheckpointError",
    "Plan",
    "PlanStep",
    "ProgressEvent",
    "SnapcoreError",
    "SnapshotKind",
    "SnapshotNotFoundError",
    "SnapshotRequest",
    "__version__",
    "hookimpl",
]
