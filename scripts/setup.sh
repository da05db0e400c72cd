#!/usr/bin/env bash
# Make .venv in the checkout if needed and install tessera into it, torch first.
#   scripts/setup.sh        the package (what the demo needs)
#   scripts/setup.sh test   the package and the test extras
# TESSERA_TORCH overrides the torch requirement (default: torch==2.13.0, the CPU build);
# on a machine with a GPU, e.g. TESSERA_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# shellcheck disable=SC2086  # the spec may carry pip options
"${pip[@]}" ${TESSERA_TORCH:-torch==2.13.0}
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
"${pip[@]}" -e ".${extras}"
