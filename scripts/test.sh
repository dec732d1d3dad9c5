#!/usr/bin/env bash
# Set everything up, then run every check: ruff (lint and format), mypy (strict), and the whole
# pytest suite, real-tool integration tests included. Extra arguments go to pytest.
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
exec .venv/bin/pytest "$@"
