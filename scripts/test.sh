#!/usr/bin/env bash
# Set everything up, then run every check: ruff (lint and format), mypy (strict), the whole
# pytest suite, real-tool integration tests included (extra arguments go to this pytest run),
# then the LVM suite inside a virtme-ng guest booted with Debian's kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "test: ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "test: mypy"
.venv/bin/mypy
.venv/bin/mypy --strict examples/snapcore-rawcopy/snapcore_rawcopy
echo "test: pytest"
.venv/bin/pytest "$@"
echo "test: lvm (real device-mapper in a virtme-ng guest)"
scripts/lvm-guest.sh
scripts/xen-guest.sh
