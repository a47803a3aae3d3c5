#!/usr/bin/env bash
# Stop the dev SLURM cluster started by up.sh.
#
#   bash slurm/dev-cluster/down.sh
#
# Stops every slurmd (one per node), slurmctld, slurmdbd, mariadbd, munged.
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

take_lock
export SLURM_CONF="$SLURM_CONF_FILE"

# Cancel every job first, so no job processes (slurmstepd and its children,
# which have no PID file of ours) outlive slurmd. The cluster is ours alone,
# so all of its jobs were started through it.
jobs_left() { timeout 10 squeue -h -o %F 2>/dev/null | sort -u; }
if daemon_alive slurmctld && [[ -f "$SLURM_CONF" ]]; then
    ids="$(jobs_left)"
    if [[ -n "$ids" ]]; then
        log "cancelling remaining jobs: ${ids//$'\n'/ }"
        # shellcheck disable=SC2086
        timeout 10 scancel $ids 2>/dev/null || true
        for _ in $(seq 1 75); do
            [[ -z "$(jobs_left)" ]] && break
            sleep 0.2
        done
    fi
fi

# Reverse start order: the slurmd's, slurmctld (it still needs slurmdbd to
# flush accounting records), then the database, munge last.
stopped=()
mapfile -t order < <(slurmd_daemons)
for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do order+=("${DAEMONS[$i]}"); done
for d in "${order[@]}"; do
    if pid="$(daemon_pid "$d")"; then stopped+=("$pid"); fi
    stop_daemon "$d" 60
done

# Job processes that outlived their slurmd (a node crashed with
# crash-node.sh and never revived, or a job that ignored scancel): kill what
# is left in our nodes' job cgroups, and thaw any that are still frozen.
nodes="$(configured_nodes)"
for node in $nodes; do
    if [[ -n "$(node_job_cgroups "$node")" ]]; then
        for dir in $(node_job_cgroups "$node"); do
            if [[ -n "$(cgroup_pids "$dir")" ]]; then log "killing processes left in $dir"; fi
        done
        kill_node_jobs "$node"
    fi
    remove_node_job_cgroups "$node"
    # The node's own cgroups (slurm_<node>/uid_*), now empty: every slurmd is
    # stopped. rmdir removes only empty cgroups.
    for dir in "$CGROUP_ROOT"/*/"slurm_$node" "$CGROUP_ROOT/system.slice/${node}_slurmstepd.scope"; do
        if [[ -d "$dir" ]]; then find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
    done
done
# What up.sh learnt about this host (a cgroup mode that failed, no multiple
# slurmd support) is tried afresh by the next up.sh.
rm -f "$STATE/enforcement.failed" "$STATE/single-slurmd"

# The daemons were reparented to PID 1 when they daemonized, so it is PID 1
# that reaps them. In some containers PID 1 does that lazily, and until then
# they show up in `pgrep` as <defunct>. Give it a few seconds so that a
# `pgrep slurm` right after down.sh is clean (we cannot reap them ourselves).
# Exited job steps (zombie slurmstepd) are waited for the same way.
for pid in $(pgrep -x -r Z slurmstepd || true); do stopped+=("$pid"); done
for _ in $(seq 1 50); do
    left=0
    for pid in "${stopped[@]}"; do [[ -d "/proc/$pid" ]] && left=1; done
    ((left)) || break
    sleep 0.2
done

# A slurmstepd that survived (a job that ignored SIGTERM/SIGKILL while we
# waited) is not in our PID files and cannot be attributed to this cluster
# with certainty, so only report it.
steps=()
for pid in $(pgrep -x slurmstepd || true); do
    pid_is "$pid" slurmstepd && steps+=("$pid")
done
if ((${#steps[@]})); then
    log "note: slurmstepd processes still running (jobs still finishing?): ${steps[*]}"
fi
log "stopped (state kept in $STATE)"
