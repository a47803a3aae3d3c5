#!/usr/bin/env bash
# Bring a node crashed by crash-node.sh back:
#
#   bash slurm/dev-cluster/revive-node.sh node2
#
# Starts the node's slurmd again and waits (up to 60 s) until the node is
# usable (idle/mixed/allocated); a DOWN or DRAINED node is resumed. Revive
# only after Slurm has seen the node fail (its jobs NODE_FAIL): a node that
# comes back before SlurmdTimeout just registers without the jobs it had.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$HERE/common.sh"

node="$(node_argument "$0" "${1:-}")" || exit 2
take_lock
export SLURM_CONF="$SLURM_CONF_FILE"

if ! daemon_alive "slurmd-$node"; then
    log "starting slurmd for $node"
    install -d -m 755 "$SPOOL_DIR/slurmd-$node"
    rm -f "$(pid_file "slurmd-$node")"
    slurmd -N "$node" </dev/null >>"$LOG_DIR/slurmd-$node.log" 2>&1 9>&- \
        || { log "ERROR: slurmd for $node failed to start; see $LOG_DIR/slurmd-$node.log"; tail -n 20 "$LOG_DIR/slurmd-$node.log" >&2; exit 1; }
fi
start=$SECONDS
until node_ready "$node" >/dev/null 2>&1; do
    if ((SECONDS - start > 60)); then
        log "ERROR: $node is not usable 60 s after its slurmd started: $(scontrol show node "$node" | grep -oE '(State|Reason)=[^ ]*' | tr '\n' ' ')"
        tail -n 20 "$LOG_DIR/slurmd-$node.log" >&2
        exit 1
    fi
    sleep 0.2
done
log "revived $node in $((SECONDS - start))s: $(sinfo -h -N -o '%N %T' | awk -v n="$node" '$1 == n && !seen++ {print $2}')"
