"""snapcore qemu hypervisor plugin: running QEMU domains over QMP."""

from typing import Final

#: The hypervisor name a domain file gives (``hypervisor = "qemu"``).
NAME: Final = "qemu"
