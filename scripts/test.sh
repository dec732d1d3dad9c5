#!/usr/bin/env bash
# Set everything up, then run every check: ruff (lint and format), mypy (strict), the whole
# pytest suite, real-tool integration tests included (extra arguments go to the pytest runs),
# the live tests (marker `live`: real QEMU processes) again on QEMU 10.0 from bookworm-backports
# (unpacked into .cache/qemu10 by scripts/qemu10.sh; the system's QEMU 7.2 runs the first pass),
# then the LVM suite inside a virtme-ng guest booted with Debian's kernel, and the Xen suite in
# dom0 of a Xen 4.17 host under TCG.
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
echo "test: live tests on QEMU 10"
qemu10=$(scripts/qemu10.sh --check)
SNAPCORE_TEST_QEMU=$qemu10 .venv/bin/pytest -m live "$@"
echo "test: lvm (real device-mapper in a virtme-ng guest)"
scripts/lvm-guest.sh
echo "test: xen (a real Xen 4.17 host under TCG)"
scripts/xen-guest.sh
