"""The few constants the plugin needs at load time, kept apart from the engine so that loading
the plugin (on every snapcore command) does not import the VHD engine."""

from __future__ import annotations

from typing import Final

#: The driver name disks use.
DRIVER: Final = "vhd"
#: The longest chain a disk may reach (XAPI's limit).
DEFAULT_MAX_DEPTH: Final = 30
#: Bytes per sector.
SECTOR: Final = 512
#: The cookie that starts a VHD footer.
FOOTER_COOKIE: Final = b"conectix"
