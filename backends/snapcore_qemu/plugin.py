"""Hook implementations of the qemu plugin (work in progress: no hooks yet)."""

from snapcore.hookspecs import HOOK_API_VERSION

SNAPCORE_HOOK_API = HOOK_API_VERSION
