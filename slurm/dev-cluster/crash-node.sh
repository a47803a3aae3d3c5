#!/usr/bin/env bash
# Crash one node of the dev cluster, the way a machine dies mid-job:
#
#   bash slurm/dev-cluster/crash-node.sh node2
#
# Its slurmd is SIGKILLed, and every process of the jobs running there
# (slurmstepd's and tasks) is frozen, then SIGKILLed, so that nothing reports
# the jobs' end to slurmctld: for Slurm the node simply stops answering.
# After SlurmdTimeout (10 s) plus slurmctld's ping cycle the node is DOWN and
# its jobs end NODE_FAIL (measured 26-29 s after the crash); a requeueable
# job is queued again and runs on another node ~6 s later.
#
# Killing only slurmd would leave the jobs running (slurmstepd does not need
# slurmd), which is not a node failure. Bring the node back with
# revive-node.sh (or up.sh). Prints the killed job ids on stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$HERE/common.sh"

node="$(node_argument "$0" "${1:-}")" || exit 2
take_lock
export SLURM_CONF="$SLURM_CONF_FILE"

# The jobs Slurm runs there (for the no-cgroup case; with cgroups the job
# cgroups of the node are found directly).
jobs="$(timeout 10 squeue -h -w "$node" -t RUNNING,COMPLETING -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)"

slurmd_pid="$(daemon_pid "slurmd-$node" || true)"
# Stop slurmd first so it handles nothing while its jobs are killed.
[[ -n "$slurmd_pid" ]] && { kill -STOP "$slurmd_pid" 2>/dev/null || true; }
# shellcheck disable=SC2086
kill_node_jobs "$node" $jobs
if [[ -n "$slurmd_pid" ]]; then
    kill -KILL "$slurmd_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        pid_is "$slurmd_pid" slurmd || break
        sleep 0.1
    done
    rm -f "$(pid_file "slurmd-$node")"
fi
remove_node_job_cgroups "$node"
log "crashed $node: slurmd ${slurmd_pid:-(was not running)} killed, jobs killed: ${jobs:-none}"
# shellcheck disable=SC2086  # one job id a line
[[ -z "$jobs" ]] || printf "%s\n" $jobs
