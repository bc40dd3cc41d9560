#!/usr/bin/env bash
# Build the wheel as a release does, install it with its dependencies from the
# package registries into a bare virtual environment (pip's cache is reused),
# and run the demo's night and a worklist from a folder outside the checkout.
# Nothing of the checkout is on the path, and a `git` that fails stands on the PATH.
#   ./scripts/check_wheel.sh [SCRATCH_DIR]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
scratch="${1:-$(mktemp -d /tmp/osteo-wheel-XXXXXX)}"
mkdir -p "$scratch"
cd "$scratch"
echo "check_wheel: building the wheel from $repo (HEAD, as a release does from a clean clone)" >&2
rm -rf src && git clone -q "$repo" src  # no build/ left from an earlier build can slip stale modules in
python3 -m pip wheel --no-deps -q -w dist ./src
whl="$(ls dist/osteo_batch-*.whl)"
echo "check_wheel: $(unzip -Z1 "$whl" | cut -d/ -f1 | sort -u | tr '\n' ' ')" >&2
python3 -m venv venv
echo "check_wheel: installing $whl and its dependencies into a fresh venv" >&2
venv/bin/python -m pip install -q --disable-pip-version-check "$whl"
mkdir -p spy && printf '#!/bin/sh\necho "git $*" >> %s/git-calls\nexit 1\n' "$scratch" > spy/git && chmod +x spy/git
export PATH="$scratch/spy:$scratch/venv/bin:/usr/bin:/bin"
unset PYTHONPATH OSTEO_BATCH_SQL_DIR OSTEO_BATCH_REPORTS_DIR
venv/bin/python - <<'PY'
import osteo_batch, osteo_batch.resources as r, osteo_batch.flows.nightly as n, sys
for p in (osteo_batch.__file__, r.SQL_DIR, r.REPORTS_DIR, n.__file__):
    print("check_wheel: from", p, file=sys.stderr)
    assert "/venv/" in str(p), p
PY
mkdir -p elsewhere && cd elsewhere
time osteo-batch demo --workdir demo-work --no-prefect
osteo-batch worklist --workdir demo-work
test ! -e "$scratch/git-calls" || { echo "check_wheel: git was called:"; cat "$scratch/git-calls"; exit 1; }
echo "check_wheel: ok ($scratch)" >&2
