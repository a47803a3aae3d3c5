# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared by up.sh, down.sh, crash-node.sh and revive-node.sh (sourced, not executed).
#
# Everything the dev cluster owns lives under one state folder so that it can
# be inspected, wiped, and -- most importantly -- stopped by PID file without
# touching any other slurm/munge/mariadb process that may exist on the host.

STATE="${ZHPC_SLURM_DIR:-/tmp/zenodo-hpc-slurm}"
# Absolute path: it ends up in slurm.conf and in env.sh, which are read from
# other working directories.
case "$STATE" in
    /*) ;;
    *) STATE="$PWD/$STATE" ;;
esac

ETC_DIR="$STATE/etc"            # slurm.conf, slurmdbd.conf, cgroup.conf
RUN_DIR="$STATE/run"            # PID files of every daemon we start
LOG_DIR="$STATE/log"            # one log per daemon (one per node for slurmd)
SPOOL_DIR="$STATE/spool"        # StateSaveLocation, SlurmdSpoolDir (one per node)
MUNGE_DIR="$STATE/munge"        # our own munge key + seed
MUNGE_SOCKET_DIR="$MUNGE_DIR/run"   # must be mode 755 for munged
MUNGE_SOCKET="$MUNGE_SOCKET_DIR/munge.socket.2"
DB_DIR="$STATE/mariadb"         # mariadb data dir + socket
DB_SOCKET="$DB_DIR/mysqld.sock"

SLURM_CONF_FILE="$ETC_DIR/slurm.conf"
ENV_FILE="$STATE/env.sh"
# What up.sh decided about enforcement (cgroup/v1, cgroup/v2 or none + why),
# as `export` lines; env.sh includes them.
ENFORCEMENT_FILE="$STATE/enforcement.env"

# Node names are <prefix>1..<prefix>N. Two dev clusters on one machine need
# different prefixes (Slurm's cgroups are named after the node) and ports.
NODE_PREFIX="${ZHPC_SLURM_NODE_PREFIX:-node}"
PORT_OFFSET="${ZHPC_SLURM_PORT_OFFSET:-0}"

# Order matters: this is the start order. down.sh stops in reverse order. The
# slurmd's (one per node, PID files run/slurmd-<node>.pid) come after these.
DAEMONS=(munged mariadbd slurmdbd slurmctld)

log() { printf '[dev-cluster] %s\n' "$*" >&2; }

# A daemon's name is its program name, or program-<node> for a slurmd.
pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }

# The slurmd daemon names that have a PID file now (whatever the node count
# is: a cluster started with more nodes, or the old single slurmd.pid).
slurmd_daemons() {
    local f
    for f in "$RUN_DIR"/slurmd.pid "$RUN_DIR"/slurmd-*.pid; do
        [[ -e "$f" ]] || continue
        f="${f##*/}"
        printf '%s\n' "${f%.pid}"
    done
}

# True if PID $1 is a live (not zombie) process whose name is $2.
pid_is() {
    local pid="$1" name="$2" comm state
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [[ "$comm" == "$name" ]] || return 1
    state="$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" || return 1
    # A zombie has exited already; it only waits for its parent to reap it.
    [[ "$state" != Z ]]
}

# Print the PID of daemon $1 if its PID file names a live process that really
# is that program (a stale PID file after a reboot/crash may point at a PID
# that was reused by something else -- we must never signal that).
daemon_pid() {
    local name="$1" file pid
    file="$(pid_file "$name")"
    [[ -s "$file" ]] || return 1
    pid="$(tr -dc '0-9' < "$file")"
    [[ -n "$pid" ]] && pid_is "$pid" "${name%%-*}" || return 1
    printf '%s\n' "$pid"
}

daemon_alive() { daemon_pid "$1" >/dev/null; }

# Stop daemon $1 via its PID file: SIGTERM, wait up to $2 seconds (default 30)
# for a clean exit, then SIGKILL as a last resort. No-op if not running.
stop_daemon() {
    local name="$1" timeout="${2:-30}" pid i
    if ! pid="$(daemon_pid "$name")"; then
        rm -f "$(pid_file "$name")"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        pid_is "$pid" "${name%%-*}" || break
        sleep 0.1
    done
    if pid_is "$pid" "${name%%-*}"; then
        log "$name (pid $pid) did not exit within ${timeout}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_is "$pid" "${name%%-*}" || break
            sleep 0.1
        done
    fi
    rm -f "$(pid_file "$name")"
}

# Serialise up.sh/down.sh/crash/revive runs on the same state folder (e.g. two
# CI steps, or a test fixture racing a developer), so they never start daemons
# twice.
take_lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    if ! flock -n 9; then
        log "waiting for another dev-cluster script on $STATE to finish"
        flock -w 300 9 || { log "ERROR: could not lock $STATE/.lock within 300s"; exit 1; }
    fi
}

# The nodes of the rendered slurm.conf (NodeName=... lines).
configured_nodes() {
    sed -n 's/^NodeName=\([^ ]*\) .*/\1/p' "$SLURM_CONF_FILE" 2>/dev/null || true
}

# The NODE argument of the failure scripts, checked against the configured
# nodes: printed on stdout, or a usage line and status 2.
node_argument() {
    local script="$1" node="$2"
    [[ -n "$node" ]] || { log "usage: $script NODE   (one of: $(configured_nodes | tr '\n' ' '))"; return 2; }
    configured_nodes | grep -qx "$node" \
        || { log "ERROR: '$node' is not a node of the dev cluster in $STATE (nodes: $(configured_nodes | tr '\n' ' '))"; return 2; }
    printf '%s\n' "$node"
}

# Node $1 is usable once it reports idle/mixed/allocated. A node left drained
# or down by an earlier run (a crash-node.sh, a job that could not be killed)
# is resumed: this is a throwaway dev cluster.
node_ready() {
    local st
    # (Not `sinfo -n`: in 22.05 it may answer a stale state for one node.)
    st="$(timeout 10 sinfo -h -N -o '%N %T' | awk -v n="$1" '$1 == n && !seen++ {print $2}')"
    case "$st" in
        idle* | mixed* | allocated* | completing*) return 0 ;;
        drain* | down*) scontrol update NodeName="$1" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    return 1
}

# --------------------------------------------------------------------------
# Job processes of a node, for crash-node.sh and down.sh.
#
# With cgroups, Slurm puts every job of node N (its slurmstepd's and their
# tasks) under one directory per job:
#   cgroup v1: /sys/fs/cgroup/freezer/slurm_N/uid_<uid>/job_<id>/...
#   cgroup v2: /sys/fs/cgroup/system.slice/N_slurmstepd.scope/job_<id>/...
# Without cgroups (proctrack/linuxproc) the jobs are the slurmstepd's named
# "slurmstepd: [<id>.<step>]" and their descendants.
# --------------------------------------------------------------------------
CGROUP_ROOT=/sys/fs/cgroup

# The job cgroup directories of node $1 (none if it has no cgroups).
node_job_cgroups() {
    local node="$1" d
    for d in "$CGROUP_ROOT/freezer/slurm_$node"/uid_*/job_* \
             "$CGROUP_ROOT/system.slice/${node}_slurmstepd.scope"/job_*; do
        [[ -d "$d" ]] && printf '%s\n' "$d"
    done
    return 0
}

# Every PID in cgroup directory $1 and below.
cgroup_pids() {
    find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u
}

# Freeze (1) or thaw (0) the cgroup directory $1, v1 or v2.
cgroup_freeze() {
    local dir="$1" on="$2" i
    if [[ -e "$dir/cgroup.freeze" ]]; then            # v2
        echo "$on" > "$dir/cgroup.freeze" 2>/dev/null || return 1
    elif [[ -e "$dir/freezer.state" ]]; then          # v1
        if ((on)); then
            echo FROZEN > "$dir/freezer.state" 2>/dev/null || return 1
            for ((i = 0; i < 50; i++)); do
                [[ "$(cat "$dir/freezer.state" 2>/dev/null)" == FROZEN ]] && break
                sleep 0.1
            done
        else
            echo THAWED > "$dir/freezer.state" 2>/dev/null || return 1
        fi
    else
        return 1
    fi
}

# The slurmstepd's of the jobs $@ (job ids), and all their descendants.
stepd_trees() {
    local id pid comm ppid
    local -A keep=()
    for pid in $(pgrep -x slurmstepd || true); do
        for id in "$@"; do
            if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "\[$id\."; then
                keep[$pid]=1
            fi
        done
    done
    # Descendants: repeat until no new child of a kept process appears.
    local grew=1
    while ((grew)); do
        grew=0
        while read -r pid ppid; do
            if [[ -n "${keep[$ppid]:-}" && -z "${keep[$pid]:-}" ]]; then
                keep[$pid]=1
                grew=1
            fi
        done < <(ps -e -o pid=,ppid=)
    done
    printf '%s\n' "${!keep[@]}"
}

# Kill every process of node $1's jobs at once, so that no slurmstepd sees its
# tasks end and reports it (the node must look dead, not its jobs failed).
# $2...: job ids Slurm says run there (for the no-cgroup case).
kill_node_jobs() {
    local node="$1" d pids
    shift
    local -a dirs
    mapfile -t dirs < <(node_job_cgroups "$node")
    # 1. Freeze the job cgroups: slurmstepd and tasks stop where they are.
    for d in "${dirs[@]}"; do cgroup_freeze "$d" 1 || true; done
    # 2. Without cgroups: stop the slurmstepd trees instead.
    pids="$(stepd_trees "$@")"
    # shellcheck disable=SC2086
    [[ -n "$pids" ]] && { kill -STOP $pids 2>/dev/null || true; }
    # 3. SIGKILL everything (a frozen process dies as soon as it is thawed).
    for d in "${dirs[@]}"; do
        if [[ -e "$d/cgroup.kill" ]]; then
            echo 1 > "$d/cgroup.kill" 2>/dev/null || true
        fi
        # shellcheck disable=SC2046
        kill -KILL $(cgroup_pids "$d") 2>/dev/null || true
    done
    # shellcheck disable=SC2086
    [[ -n "$pids" ]] && { kill -KILL $pids 2>/dev/null || true; }
    # 4. Thaw, so the killed processes can exit.
    for d in "${dirs[@]}"; do cgroup_freeze "$d" 0 || true; done
    return 0
}

# Remove the job cgroup directories of node $1 once their processes are gone
# (after kill_node_jobs: Slurm would never clean up after a dead slurmd). In
# cgroup v1 each controller (freezer, memory, cpuacct, ...) has its own copy.
remove_node_job_cgroups() {
    local node="$1" d i
    for ((i = 0; i < 20; i++)); do
        local left=0
        for d in "$CGROUP_ROOT"/*/"slurm_$node"/uid_*/job_* \
                 "$CGROUP_ROOT/system.slice/${node}_slurmstepd.scope"/job_*; do
            [[ -d "$d" ]] || continue
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [[ -d "$d" ]] && left=1
        done
        ((left)) || return 0
        sleep 0.1
    done
    log "note: could not remove every job cgroup of $node (processes still exiting?)"
}
