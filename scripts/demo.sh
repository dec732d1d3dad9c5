#!/usr/bin/env bash
# Set everything up, then run `snapcore demo` on a scratch domain it builds itself.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/snapcore demo "$@"
