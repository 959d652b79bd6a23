#!/usr/bin/env bash
# The example external project (examples/historian) as a user runs it: installed into the
# ACTIVE virtual environment (iiotbed already installed there), then its own tests from its
# own folder. Usage: . .venv/bin/activate && .ci/examples.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
    echo "error: activate the virtual environment iiotbed is installed in first" >&2
    exit 2
fi
python3 -c 'import iiotbed' 2>/dev/null \
    || { echo "error: iiotbed is not installed in $VIRTUAL_ENV" >&2; exit 2; }
python3 -m pip install -q -e examples/historian
cd examples/historian && python3 -m pytest
