"""snapcore: consistent snapshots of whole virtual machines on mixed storage.

The public API: open a domain through a :class:`Host`, then create, list, revert and delete
its checkpoints through the :class:`DomainHandle`; plugin authors use :data:`hookimpl`, the
models and :class:`HookContext`. See ``docs/api.md`` and ``docs/plugin-guide.md``.
"""

import importlib
import typing

from snapcore._version import __version__

if typing.TYPE_CHECKING:
    from snapcore.api import DomainHandle, Host
    from snapcore.context import HookContext
    from snapcore.errors import (
        CommandError,
        ConfigError,
        DeleteFailedError,
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

# Names are imported on first use, so `import snapcore` (and `snapcore --version`) stays cheap.
_LAZY: dict[str, str] = {
    "BackendInfo": "snapcore.model",
    "Checkpoint": "snapcore.model",
    "CheckpointView": "snapcore.model",
    "CommandError": "snapcore.errors",
    "ConfigError": "snapcore.errors",
    "CreateOptions": "snapcore.model",
    "Disk": "snapcore.model",
    "DiskChoice": "snapcore.model",
    "DiskSnapshot": "snapcore.model",
    "Domain": "snapcore.model",
    "DomainHandle": "snapcore.api",
    "DomainState": "snapcore.model",
    "HOOK_API_VERSION": "snapcore.hookspecs",
    "HookContext": "snapcore.context",
    "Host": "snapcore.api",
    "HypervisorInfo": "snapcore.model",
    "MemoryImage": "snapcore.model",
    "DeleteFailedError": "snapcore.errors",
    "OperationFailedError": "snapcore.errors",
    "PartialCheckpointError": "snapcore.errors",
    "Plan": "snapcore.model",
    "PlanStep": "snapcore.model",
    "ProgressEvent": "snapcore.model",
    "SnapcoreError": "snapcore.errors",
    "SnapshotKind": "snapcore.model",
    "SnapshotNotFoundError": "snapcore.errors",
    "SnapshotRequest": "snapcore.model",
    "hookimpl": "snapcore.hookspecs",
}

__all__ = [
    "HOOK_API_VERSION",
    "BackendInfo",
    "Checkpoint",
    "CheckpointView",
    "CommandError",
    "ConfigError",
    "CreateOptions",
    "DeleteFailedError",
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


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'snapcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
