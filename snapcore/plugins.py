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
from snapcore.boundary import CallRegistry, Hypervisor, StorageBackend
from snapcore.context import InfoContext
from snapcore.errors import (
    BackendConflictError,
    ConfigError,
    NoBackendError,
    NoHypervisorError,
    PluginLoadError,
    SnapcoreError,
)
from snapcore.model import BackendInfo, Disk, HypervisorInfo

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP: Final = "snapcore.plugins"
#: Comma-separated plugin names not to load (like ``--disable-plugin``).
DISABLE_ENV: Final = "SNAPCORE_DISABLE_PLUGINS"


#: Seconds every hook may take, overriding plugins and defaults (see :mod:`snapcore.boundary`).
HOOK_TIMEOUT_ENV: Final = "SNAPCORE_HOOK_TIMEOUT"


@dataclass(frozen=True, slots=True)
class PluginRecord:
    """One loaded plugin, for ``snapcore plugins``.

    :ivar api: the hook API version the plugin was written for.
    :ivar deprecated: why the plugin should be updated (it uses an older major hook API), or
        ``None``.
    """

    name: str
    source: str
    version: str
    backend: BackendInfo | None = None
    hypervisor: HypervisorInfo | None = None
    api: tuple[int, int] = hookspecs.HOOK_API_VERSION
    deprecated: str | None = None


class Plugins:
    """A plugin manager plus the registries built from it: one
    :class:`~snapcore.boundary.StorageBackend` per driver, one
    :class:`~snapcore.boundary.Hypervisor` per hypervisor name.

    Build one with :func:`load_plugins`. It is not shared between threads while plugins are
    being registered; calling hooks from several threads is fine.

    :param hook_timeout: the user's time limit for every hook call, in seconds (``None``: the
        plugins' own or snapcore's defaults).
    """

    def __init__(self, pm: pluggy.PluginManager, *, hook_timeout: float | None = None):
        self.pm = pm
        #: pluggy's broadcast caller; the core uses it for nothing but claims (see
        #: :mod:`snapcore.boundary` for how hooks are called).
        self.hook = pm.hook
        self.calls = CallRegistry()
        self.hook_timeout = hook_timeout
        self._sources: dict[str, tuple[str, str]] = {}
        self._apis: dict[str, tuple[int, int]] = {}
        self._backends: dict[str, tuple[StorageBackend, BackendInfo]] = {}
        self._hypervisors: dict[str, tuple[Hypervisor, HypervisorInfo]] = {}

    # -- registration -------------------------------------------------------------------------

    def register(self, plugin: object, name: str, *, source: str = "", version: str = "") -> None:
        """Register *plugin* (a module or object with hookimpls) under *name*.

        Failure guarantee: on error the plugin is not registered and the registries are
        unchanged.

        :raises PluginLoadError: the hookimpls do not match the specs, the plugin targets an
            incompatible hook API version, its info hook fails or returns the wrong type, or
            *name* is taken.
        :raises BackendConflictError: it reports a driver or hypervisor another plugin has.
        """
        api = _check_api_version(plugin, name)
        if self.pm.has_plugin(name):
            raise PluginLoadError(name, "a plugin with this name is already loaded")
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginLoadError(name, str(exc)) from exc
        try:
            self._check_unknown_hooks(plugin, name)
            self._index(plugin, name, api)
        except BaseException:
            self.pm.unregister(plugin, name=name)
            raise
        self._sources[name] = (source or getattr(plugin, "__name__", repr(plugin)), version)
        self._apis[name] = api

    def _check_unknown_hooks(self, plugin: object, name: str) -> None:
        for caller in self.pm.get_hookcallers(plugin) or ():
            if caller.spec is None:
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin and not impl.opts.get("optionalhook"):
                        raise PluginLoadError(
                            name, f"it implements {caller.name!r}, which is not a snapcore hook"
                        )

    def _index(self, plugin: object, name: str, api: tuple[int, int]) -> None:
        storage = StorageBackend(
            name, plugin, self.pm, api=api, calls=self.calls, user_timeout=self.hook_timeout
        )
        hypervisor = Hypervisor(
            name, plugin, self.pm, api=api, calls=self.calls, user_timeout=self.hook_timeout
        )
        ctx = InfoContext(log=logging.getLogger(f"snapcore.plugin.{name}"))
        backend = hyper = None
        try:
            if storage.implements("backend_info"):
                backend = storage.backend_info(ctx)
            if hypervisor.implements("hypervisor_info"):
                hyper = hypervisor.hypervisor_info(ctx)
        except SnapcoreError as exc:
            raise PluginLoadError(name, str(exc)) from exc
        if backend is not None and backend.driver in self._backends:
            raise BackendConflictError(
                backend.driver, [self._backends[backend.driver][0].name, name]
            )
        if hyper is not None and hyper.name in self._hypervisors:
            raise BackendConflictError(hyper.name, [self._hypervisors[hyper.name][0].name, name])
        if backend is not None:
            storage.provides = backend.driver
            storage.plugin_timeout = backend.hook_timeout
            self._backends[backend.driver] = (storage, backend)
        if hyper is not None:
            hypervisor.provides = hyper.name
            hypervisor.plugin_timeout = hyper.hook_timeout
            self._hypervisors[hyper.name] = (hypervisor, hyper)

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

    def storage(self, driver: str, *, vdev: str = "?", path: str = "") -> StorageBackend:
        """The plugin providing *driver*, to call its storage hooks (see
        :mod:`snapcore.boundary`).

        :raises NoBackendError: no loaded plugin provides *driver* (*vdev* and *path* name the
            disk in the message).
        """
        entry = self._backends.get(driver)
        if entry is None:
            raise NoBackendError(vdev, path, driver)
        return entry[0]

    def controller(self, name: str) -> Hypervisor:
        """The plugin providing hypervisor *name*, to call its hooks.

        :raises NoHypervisorError: when none is loaded or it is unavailable here.
        """
        self.hypervisor(name)
        return self._hypervisors[name][0]

    def records(self) -> list[PluginRecord]:
        """Every loaded plugin with what it provides."""
        by_plugin_b = {h.name: info for h, info in self._backends.values()}
        by_plugin_h = {h.name: info for h, info in self._hypervisors.values()}
        out = []
        for name, _plugin in self.pm.list_name_plugin():
            source, version = self._sources.get(name, ("", ""))
            api = self._apis.get(name, hookspecs.HOOK_API_VERSION)
            deprecated = None
            if api[0] < hookspecs.HOOK_API_MAJOR:
                deprecated = (
                    f"written for hook API {api[0]}.{api[1]}, loaded through compatibility "
                    f"rules; update it to {hookspecs.HOOK_API_MAJOR}.x "
                    "(docs/hook-api-changelog.md)"
                )
            out.append(
                PluginRecord(
                    name=name,
                    source=source,
                    version=version,
                    backend=by_plugin_b.get(name),
                    hypervisor=by_plugin_h.get(name),
                    api=api,
                    deprecated=deprecated,
                )
            )
        return sorted(out, key=lambda r: r.name)

    def resolve_disk(self, disk: Disk) -> Disk:
        """Return *disk* with its driver set, and check that the driver is usable.

        A disk without a driver is offered to every storage plugin's ``disk_claim``.

        :raises NoBackendError: no plugin provides the named driver, none or several claim
            the disk, or the backend reports itself unavailable on this host.
        :raises PluginContractError: a plugin's claim is not ``None`` or its own driver.
        """
        if disk.driver is None:
            claims = sorted(
                driver for driver, (handle, _) in self._backends.items() if handle.disk_claim(disk)
            )
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


def _check_api_version(plugin: object, name: str) -> tuple[int, int]:
    """The hook API version *plugin* was written for (the current one when it says none).

    :raises PluginLoadError: it is not a ``(major, minor)`` pair this snapcore can load.
    """
    wanted = getattr(plugin, "SNAPCORE_HOOK_API", None)
    have = hookspecs.HOOK_API_VERSION
    if wanted is None:
        return have
    try:
        major, minor = (int(x) for x in wanted)
    except (TypeError, ValueError):
        raise PluginLoadError(
            name, f"SNAPCORE_HOOK_API must be (major, minor), not {wanted!r}"
        ) from None
    oldest = hookspecs.HOOK_API_OLDEST_MAJOR
    if major > have[0] or (major == have[0] and minor > have[1]) or major < oldest:
        accepted = f"{oldest}.x to {have[0]}.{have[1]}" if oldest < have[0] else f"{have[0]}.x"
        raise PluginLoadError(
            name,
            f"it needs hook API {major}.{minor}; this snapcore provides {have[0]}.{have[1]} "
            f"and loads plugins written for {accepted}",
        )
    return (major, minor)


def _timeout_from_env() -> float | None:
    text = os.environ.get(HOOK_TIMEOUT_ENV, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{HOOK_TIMEOUT_ENV} must be a positive number of seconds, not {text!r}")
    return seconds


def _disabled_from_env() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def load_plugins(
    *,
    entry_points: bool = True,
    disabled: Iterable[str] = (),
    extra: Sequence[tuple[str, object]] = (),
    hook_timeout: float | None = None,
) -> Plugins:
    """Build a fresh plugin manager with the specs, the built-ins and the installed plugins.

    :param entry_points: load plugins from the ``snapcore.plugins`` entry-point group.
    :param disabled: plugin names not to load (added to ``$SNAPCORE_DISABLE_PLUGINS``).
    :param extra: ``(name, plugin)`` pairs to register as well, after the entry points.
    :param hook_timeout: seconds every hook call may take (default: ``$SNAPCORE_HOOK_TIMEOUT``,
        else each plugin's own limit or snapcore's defaults).
    :raises ConfigError: ``$SNAPCORE_HOOK_TIMEOUT`` is not a positive number.
    :raises PluginLoadError: a plugin does not import or does not match the hook specs.
    :raises BackendConflictError: two plugins provide one driver.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if hook_timeout is None:
        hook_timeout = _timeout_from_env()
    plugins = Plugins(pm, hook_timeout=hook_timeout)
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
