"""Loading plugins: entry points, validation, and the driver and hypervisor registries.

Built-in backends load exactly like third-party ones, from the ``snapcore.plugins`` entry-point
group. Each failure is reported naming the plugin: one that does not import, one whose hook
implementations do not match the specs, one written for another hook API version, and two that
claim the same driver or hypervisor name.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import pluggy

from snapcore import hookspecs, offline
from snapcore.errors import (
    BackendConflictError,
    NoBackendError,
    NoHypervisorError,
    PluginLoadError,
)
from snapcore.model import BackendInfo, Disk, HypervisorInfo

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP: Final = "snapcore.plugins"
#: Comma-separated plugin names not to load (like ``--disable-plugin``).
DISABLE_ENV: Final = "SNAPCORE_DISABLE_PLUGINS"


@dataclass(frozen=True, slots=True)
class PluginRecord:
    """One loaded plugin, for ``snapcore plugins``."""

    name: str
    source: str
    version: str
    backend: BackendInfo | None = None
    hypervisor: HypervisorInfo | None = None


class Plugins:
    """A plugin manager plus the registries built from it.

    Build one with :func:`load_plugins`. It is not shared between threads while plugins are
    being registered; calling hooks from several threads is fine.
    """

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.hook = pm.hook
        self._sources: dict[str, tuple[str, str]] = {}
        self._backends: dict[str, tuple[str, BackendInfo]] = {}
        self._hypervisors: dict[str, tuple[str, HypervisorInfo]] = {}

    # -- registration -------------------------------------------------------------------------

    def register(self, plugin: object, name: str, *, source: str = "", version: str = "") -> None:
        """Register *plugin* (a module or object with hookimpls) under *name*.

        Failure guarantee: on error the plugin is not registered and the registries are
        unchanged.

        :raises PluginLoadError: the hookimpls do not match the specs, the plugin targets an
            incompatible hook API version, or *name* is taken.
        :raises BackendConflictError: it reports a driver or hypervisor another plugin has.
        """
        _check_api_version(plugin, name)
        if self.pm.has_plugin(name):
            raise PluginLoadError(name, "a plugin with this name is already loaded")
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginLoadError(name, str(exc)) from exc
        try:
            self._check_unknown_hooks(plugin, name)
            self._index(plugin, name)
        except BaseException:
            self.pm.unregister(plugin, name=name)
            raise
        self._sources[name] = (source or getattr(plugin, "__name__", repr(plugin)), version)

    def _check_unknown_hooks(self, plugin: object, name: str) -> None:
        for caller in self.pm.get_hookcallers(plugin) or ():
            if caller.spec is None:
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin and not impl.opts.get("optionalhook"):
                        raise PluginLoadError(
                            name, f"it implements {caller.name!r}, which is not a snapcore hook"
                        )

    def _index(self, plugin: object, name: str) -> None:
        backend = _call_one(self.pm, plugin, name, "backend_info")
        hypervisor = _call_one(self.pm, plugin, name, "hypervisor_info")
        if backend is not None:
            if not isinstance(backend, BackendInfo):
                raise PluginLoadError(name, "backend_info did not return a BackendInfo")
            if backend.driver in self._backends:
                raise BackendConflictError(
                    backend.driver, [self._backends[backend.driver][0], name]
                )
        if hypervisor is not None:
            if not isinstance(hypervisor, HypervisorInfo):
                raise PluginLoadError(name, "hypervisor_info did not return a HypervisorInfo")
            if hypervisor.name in self._hypervisors:
                raise BackendConflictError(
                    hypervisor.name, [self._hypervisors[hypervisor.name][0], name]
                )
        if backend is not None:
            self._backends[backend.driver] = (name, backend)
        if hypervisor is not None:
            self._hypervisors[hypervisor.name] = (name, hypervisor)

    # -- queries ------------------------------------------------------------------------------

    @property
    def drivers(self) -> dict[str, BackendInfo]:
        """The storage drivers loaded, by name."""
        return {driver: info for driver, (_, info) in sorted(self._backends.items())}

    @property
    def hypervisors(self) -> dict[str, HypervisorInfo]:
        """The hypervisors loaded, by name."""
        return {n: info for n, (_, info) in sorted(self._hypervisors.items())}

    def backend(self, driver: str) -> BackendInfo | None:
        """The backend for *driver*, or ``None``."""
        entry = self._backends.get(driver)
        return entry[1] if entry else None

    def records(self) -> list[PluginRecord]:
        """Every loaded plugin with what it provides."""
        by_plugin_b = dict(self._backends.values())
        by_plugin_h = dict(self._hypervisors.values())
        out = []
        for name, _plugin in self.pm.list_name_plugin():
            source, version = self._sources.get(name, ("", ""))
            out.append(
                PluginRecord(
                    name=name,
                    source=source,
                    version=version,
                    backend=by_plugin_b.get(name),
                    hypervisor=by_plugin_h.get(name),
                )
            )
        return sorted(out, key=lambda r: r.name)

    def resolve_disk(self, disk: Disk) -> Disk:
        """Return *disk* with its driver set, and check that the driver is usable.

        :raises NoBackendError: no plugin provides the named driver, none or several claim
            the disk, or the backend reports itself unavailable on this host.
        """
        if disk.driver is None:
            claims = sorted({c for c in self.hook.disk_claim(disk=disk) if c})
            if not claims:
                raise NoBackendError(disk.vdev, disk.path, None)
            if len(claims) > 1:
                raise NoBackendError(
                    disk.vdev,
                    disk.path,
                    None,
                    reason=f"claimed by several plugins ({', '.join(claims)}); "
                    "choose one with driver= in the domain file",
                )
            disk = disk.with_driver(claims[0])
        assert disk.driver is not None
        info = self.backend(disk.driver)
        if info is None:
            raise NoBackendError(disk.vdev, disk.path, disk.driver)
        if not info.available:
            raise NoBackendError(
                disk.vdev,
                disk.path,
                disk.driver,
                reason=f"driver {disk.driver!r} is unavailable on this host: "
                f"{info.unavailable_reason or 'unknown reason'}",
            )
        return disk

    def hypervisor(self, name: str) -> HypervisorInfo:
        """The hypervisor plugin called *name*.

        :raises NoHypervisorError: when none is loaded or it is unavailable here.
        """
        entry = self._hypervisors.get(name)
        if entry is None:
            raise NoHypervisorError(name)
        if not entry[1].available:
            raise NoHypervisorError(f"{name} (unavailable: {entry[1].unavailable_reason})")
        return entry[1]


def _call_one(pm: pluggy.PluginManager, plugin: object, name: str, hook: str) -> object:
    """Call *hook* on *plugin* alone; translate any error into a PluginLoadError."""
    caller = getattr(pm.hook, hook)
    impls = [i for i in caller.get_hookimpls() if i.plugin is plugin]
    if not impls:
        return None
    try:
        return impls[0].function()
    except Exception as exc:
        raise PluginLoadError(name, f"{hook} failed: {exc}") from exc


def _check_api_version(plugin: object, name: str) -> None:
    wanted = getattr(plugin, "SNAPCORE_HOOK_API", None)
    if wanted is None:
        return
    try:
        major, minor = (int(x) for x in wanted)
    except (TypeError, ValueError):
        raise PluginLoadError(
            name, f"SNAPCORE_HOOK_API must be (major, minor), not {wanted!r}"
        ) from None
    have = hookspecs.HOOK_API_VERSION
    if major != have[0] or minor > have[1]:
        raise PluginLoadError(
            name,
            f"it needs hook API {major}.{minor}; this snapcore provides {have[0]}.{have[1]}",
        )


def _disabled_from_env() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def load_plugins(
    *,
    entry_points: bool = True,
    disabled: Iterable[str] = (),
    extra: Sequence[tuple[str, object]] = (),
) -> Plugins:
    """Build a fresh plugin manager with the specs, the built-ins and the installed plugins.

    :param entry_points: load plugins from the ``snapcore.plugins`` entry-point group.
    :param disabled: plugin names not to load (added to ``$SNAPCORE_DISABLE_PLUGINS``).
    :param extra: ``(name, plugin)`` pairs to register as well, after the entry points.
    :raises PluginLoadError: a plugin does not import or does not match the hook specs.
    :raises BackendConflictError: two plugins provide one driver.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    skip = set(disabled) | _disabled_from_env()
    plugins.register(offline, "none", source="snapcore.offline")
    if entry_points:
        for ep in sorted(
            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
        ):
            if ep.name in skip:
                log.debug("plugin %s disabled", ep.name)
                continue
            try:
                module = ep.load()
            except Exception as exc:
                raise PluginLoadError(
                    ep.name, f"importing {ep.value} failed: {type(exc).__name__}: {exc}"
                ) from exc
            dist = ep.dist
            source = f"{dist.name} {ep.value}" if dist else ep.value
            plugins.register(module, ep.name, source=source, version=dist.version if dist else "")
    for name, plugin in extra:
        if name not in skip:
            plugins.register(plugin, name, source="registered by the caller")
    return plugins
