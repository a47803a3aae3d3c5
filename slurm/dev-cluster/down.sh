#!/usr/bin/env bash
# Stop the dev SLURM cluster started by up.sh.
#
#   bash slurm/dev-cluster/down.sh
#
# Only processes named in the PID files under the state folder
# (ZHPC_SLURM_DIR, default /tmp/zenodo-hpc-slurm) are signalled, and only if
# the PID still belongs to the expected program; any other slurm/munge/mariadb
# on the machine is left alone. Safe to run when nothing is up. The state
# folder (config, logs, accounting database) is kept; delete it by hand for a
# completely fresh cluster.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$HERE/common.sh"

if [[ ! -d "$RUN_DIR" ]]; then
    log "nothing to stop (no $RUN_DIR)"
    exit 0
fi

export SLURM_CONF="$SLURM_CONF_FILE"

# Cancel every job first, so no job processes (slurmstepd and its children,
# which have no PID file of ours) outlive slurmd. The cluster is ours alone,
# so all of its jobs were started through it.
jobs_left() { timeout 10 squeue -h -o %F 2>/dev/null | sort -u; }
if daemon_alive slurmctld && [[ -f "$SLURM_CONF" ]]; then
    ids="$(jobs_left)"
    if [[ -n "$ids" ]]; then
        log "cancelling remaining jobs: $(echo $ids)"
        # shellcheck disable=SC2086
        timeout 10 scancel $ids 2>/dev/null || true
        for _ in $(seq 1 75); do
            [[ -z "$(jobs_left)" ]] && break
            sleep 0.2
        done
    fi
fi

# Reverse start order: slurm daemons first (slurmctld still needs slurmdbd to
# flush accounting records), then the database, munge last.
for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    stop_daemon "${DAEMONS[$i]}" 60
done

# A slurmstepd that survived (a job that ignored SIGTERM/SIGKILL while we
# waited) is not in our PID files and cannot be attributed to this cluster
# with certainty, so only report it.
if pgrep -x slurmstepd >/dev/null 2>&1; then
    log "note: slurmstepd processes are still running (jobs still finishing?):"
    pgrep -a -x slurmstepd >&2 || true
fi
log "stopped (state kept in $STATE)"
