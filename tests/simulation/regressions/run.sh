#!/usr/bin/env bash
# Apply each regression patch (a fix reverted on today's tree), run the
# simulator with its seed, check that it FAILS, revert the patch.
# Usage: tests/simulation/regressions/run.sh [patch-name ...]
# Seeds and steps per patch: tests/simulation/regressions/seeds.txt
# ("name seed steps backend"); backend sqlite or postgresql (TEST_DATABASE_URL).
set -u
cd "$(dirname "$0")/../../.."
PY=.venv/bin/python
status=0
while read -r name seed steps backend; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  if [[ $# -gt 0 && ! " $* " == *" $name "* ]]; then continue; fi
  patch="tests/simulation/regressions/$name.patch"
  git apply "$patch" || { echo "== $name: patch does not apply"; status=1; continue; }
  if [[ "$backend" == postgresql ]]; then export BILLVEND_TEST_BACKEND=postgresql; else export BILLVEND_TEST_BACKEND=sqlite; fi
  out=$($PY -m tests.simulation --seed "$seed" --steps "$steps" 2>/dev/null)
  rc=$?
  git apply -R "$patch"
  if [[ $rc -ne 0 ]]; then
    echo "== $name: FOUND (seed $seed, $steps steps, $backend)"
    echo "$out" | grep -m3 "^  - " | cut -c1-300
  else
    echo "== $name: NOT found (seed $seed, $steps steps, $backend)"; status=1
  fi
done < tests/simulation/regressions/seeds.txt
exit $status
