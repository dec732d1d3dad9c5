"""The ``[xen]`` table of a domain file: what the xen plugin needs beyond the domain's name.

```toml
[xen]
config = "/etc/xen/web1.cfg"   # the xl configuration file: `snapcore domain-start` runs `xl create`
```

The core keeps the table as TOML gave it (``Domain.hypervisor_table``); this module checks it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from snapcore.errors import ConfigError
from snapcore.model import Domain

#: The keys a ``[xen]`` table may have.
KEYS: Final = ("config",)


@dataclass(frozen=True, slots=True, kw_only=True)
class XenSettings:
    """The checked ``[xen]`` table.

    :ivar config: the absolute path of the domain's xl configuration file, or ``None``.
    """

    config: str | None = None

    @classmethod
    def from_table(cls, table: Mapping[str, object]) -> XenSettings:
        """:raises ConfigError: an unknown key, or a value of the wrong type; exit 2."""
        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r} in [xen]; known keys: {', '.join(KEYS)}")
        config = table.get("config")
        if config is not None and not isinstance(config, str):
            raise ConfigError("'config' in [xen] must be a string")
        if config is not None and not os.path.isabs(config):
            raise ConfigError(f"'config' in [xen] must be an absolute path, not {config!r}")
        return cls(config=config)

    @classmethod
    def of(cls, domain: Domain) -> XenSettings:
        """The settings of *domain*'s ``[xen]`` table (defaults when it has none).

        :raises ConfigError: as :meth:`from_table`.
        """
        return cls.from_table(domain.hypervisor_table)
