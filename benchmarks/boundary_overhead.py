"""What snapcore's plugin boundary (hook API 2.0) costs per hook call, against the routing of
hook API 1.x: a pluggy broadcast to every storage plugin, each returning ``None`` for disks
not its own.

Run: ``.venv/bin/python benchmarks/boundary_overhead.py [--calls N] [--plugins P]``

Both ways call the same trivial ``disk_snapshot_list`` of one plugin, alternately in the same
loop (noise hits both alike); the figures are medians of batches of 100 calls. The boundary
adds a thread per call (for the time limit), the result check and the exception mapping; the
broadcast pays for calling every plugin. The hooks called while a guest is paused (the
hypervisor's pause and resume, one group create per driver or one create per disk) number
about ten for a four-disk domain, so ten calls bound what the boundary adds to a pause.
"""

from __future__ import annotations

import argparse
import statistics
import time
import types

import pluggy

from snapcore import hookspecs
from snapcore.context import HookContext
from snapcore.model import BackendInfo, Disk, Domain, DomainState
from snapcore.plugins import load_plugins

hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT)


def trivial_plugin(driver: str, *, guard: bool) -> types.ModuleType:
    """A plugin module whose list hook answers ``[]`` (for its own disks only, with *guard*)."""
    module = types.ModuleType(f"bench_{driver}")

    @hookimpl
    def backend_info() -> BackendInfo:
        return BackendInfo(driver=driver, available=True)

    @hookimpl
    def disk_snapshot_list(disk: Disk) -> list[object] | None:
        if guard and disk.driver != driver:
            return None
        return []

    module.backend_info = backend_info  # type: ignore[attr-defined]
    module.disk_snapshot_list = disk_snapshot_list  # type: ignore[attr-defined]
    module.SNAPCORE_HOOK_API = (2, 0)  # type: ignore[attr-defined]
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--plugins", type=int, default=7, help="storage plugins loaded (1.x)")
    args = parser.parse_args()

    disk = Disk(vdev="vda", path="/dev/null", driver="d0")
    ctx = HookContext(domain=Domain(name="bench", disks=(disk,)), state=DomainState.SHUTOFF)

    # hook API 1.x routing: every plugin gets the call, each checks the driver
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for i in range(args.plugins):
        pm.register(trivial_plugin(f"d{i}", guard=True), name=f"d{i}")

    def broadcast() -> None:
        results = pm.hook.disk_snapshot_list(disk=disk, known=(), ctx=ctx)
        assert [r for r in results if r is not None] == [[]]

    # hook API 2.0: the owner only, through the boundary
    plugins = load_plugins(entry_points=False, extra=[("d0", trivial_plugin("d0", guard=False))])
    backend = plugins.storage("d0")

    def boundary() -> None:
        assert backend.disk_snapshot_list(disk=disk, known=(), ctx=ctx) == []

    batch = 100
    times: dict[str, list[float]] = {"broadcast": [], "boundary": []}
    for _ in range(max(1, args.calls // batch)):
        for label, fn in (("broadcast", broadcast), ("boundary", boundary)):
            start = time.perf_counter()
            for _ in range(batch):
                fn()
            times[label].append((time.perf_counter() - start) / batch * 1e6)
    old = statistics.median(times["broadcast"])
    new = statistics.median(times["boundary"])
    old_label = f"hook API 1.x: broadcast to {args.plugins} plugins"
    new_label = "hook API 2.0: the owner, through the boundary"
    print(f"one disk_snapshot_list call, {args.calls} calls each, medians of {batch}-call batches:")
    print(f"  {old_label:<48}{old:8.1f} us")
    print(f"  {new_label:<48}{new:8.1f} us   ({new / old:.2f}x)")
    print(
        f"  ten calls (a four-disk pause): {10 * new / 1000:.2f} ms, "
        f"{10 * (new - old) / 1000:+.2f} ms against 1.x"
    )


if __name__ == "__main__":
    main()
