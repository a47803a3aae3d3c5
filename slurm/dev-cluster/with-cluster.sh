#!/usr/bin/env bash
# Run a command (the test suite) with the dev SLURM cluster up, and bring the cluster down afterwards,
# whatever the command's outcome. Without root or apt-get the command still runs: the SLURM tests then
# skip, saying why. Used by `make test` (and so by .ci/run).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export ZHPC_SLURM_MAX_ARRAY_SIZE=${ZHPC_SLURM_MAX_ARRAY_SIZE:-5}   # small, so that tests split arrays
started=0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if env_line=$(bash "$here/up.sh"); then
    eval "$env_line"
    started=1
  else
    echo "with-cluster: the dev SLURM cluster did not come up; SLURM tests will be skipped" >&2
  fi
else
  echo "with-cluster: not root or no apt-get: no dev SLURM cluster; SLURM tests will be skipped" >&2
fi
"$@"
status=$?
if [ "$started" = 1 ]; then
  bash "$here/down.sh" >&2 || echo "with-cluster: down.sh failed" >&2
fi
exit $status
