#!/usr/bin/env bash
# Run a command (the test suite) with the dev SLURM cluster up, and bring the cluster down afterwards,
# whatever the command's outcome. Without root or apt-get the command still runs: the SLURM tests then
# skip, saying why. Used by `make test` (and so by .ci/run).
#
# Several runs at once on one machine (a CI clone and a developer's `make test`) share the cluster: each
# holds a shared lock on <state>/.users while its command runs, and only the last one to finish brings
# the cluster down, so no run loses its cluster in the middle of its tests.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export ZHPC_SLURM_MAX_ARRAY_SIZE=${ZHPC_SLURM_MAX_ARRAY_SIZE:-5}   # small, so that tests split arrays
state=${ZHPC_SLURM_DIR:-/tmp/zenodo-hpc-slurm}
started=0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  mkdir -p "$state"
  exec 8>"$state/.users"
  flock -s 8
  # 8>&-: the daemons up.sh starts must not hold the users' lock.
  if env_lines=$(bash "$here/up.sh" 8>&-); then
    eval "$env_lines"   # SLURM_CONF, ZHPC_SLURM_DIR, ZHPC_SLURM_ENFORCEMENT, ZHPC_SLURM_NO_ENFORCEMENT
    started=1
  else
    echo "with-cluster: the dev SLURM cluster did not come up; SLURM tests will be skipped" >&2
  fi
else
  echo "with-cluster: not root or no apt-get: no dev SLURM cluster; SLURM tests will be skipped" >&2
fi
"$@" 8>&-
status=$?
if [ "$started" = 1 ]; then
  if flock -n -x 8; then
    bash "$here/down.sh" >&2 8>&- || echo "with-cluster: down.sh failed" >&2
  else
    echo "with-cluster: another run still uses the dev SLURM cluster; leaving it up for it" >&2
  fi
fi
exit $status
