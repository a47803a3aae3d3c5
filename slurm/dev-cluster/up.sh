#!/usr/bin/env bash
# Bring up a real several-node SLURM cluster on this one machine (slurmctld,
# one slurmd per node, slurmdbd + mariadbd, munged) for development and CI,
# without systemd, with memory enforcement through cgroups where the host
# allows it.
#
#   bash slurm/dev-cluster/up.sh          # logs go to stderr
#   source /tmp/zenodo-hpc-slurm/env.sh   # or: eval "$(bash slurm/dev-cluster/up.sh)"
#
# Environment knobs:
#   ZHPC_SLURM_DIR             state folder (default /tmp/zenodo-hpc-slurm)
#   ZHPC_SLURM_MAX_ARRAY_SIZE  slurm.conf MaxArraySize (default 1001)
#   ZHPC_SLURM_NODES           number of nodes, node1..nodeN (default 3)
#   ZHPC_SLURM_CPUS            CPUs each node declares (default 4)
#   ZHPC_SLURM_CGROUP          auto (default), v1, v2 or none: how jobs are
#                              contained; none = no memory enforcement
#   ZHPC_SLURM_NODE_PREFIX     node names are <prefix>1..N (default node)
#   ZHPC_SLURM_PORT_OFFSET     added to every port (default 0): with another
#                              ZHPC_SLURM_DIR and prefix, a second cluster
#
# Only `export`/`unset` lines for the cluster's environment are printed on
# stdout (SLURM_CONF, ZHPC_SLURM_DIR, ZHPC_SLURM_ENFORCEMENT and, when there
# is no enforcement, ZHPC_SLURM_NO_ENFORCEMENT=<why>); everything else goes
# to stderr. Idempotent: if the cluster is already up with the same config it
# just says so. If a knob changed, the slurm daemons are restarted with the
# new config (munged, mariadb and the accounting data are kept).
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$HERE/common.sh"

MAX_ARRAY_SIZE="${ZHPC_SLURM_MAX_ARRAY_SIZE:-1001}"
NODES="${ZHPC_SLURM_NODES:-3}"
CPUS="${ZHPC_SLURM_CPUS:-4}"
CGROUP_WANTED="${ZHPC_SLURM_CGROUP:-auto}"
HOST="$(hostname -s)"
CLUSTER="zhpc-dev"
ACCOUNT="zhpc"
QOS="limited"                   # MaxSubmitJobsPerUser=$QOS_MAX_SUBMIT
QOS_MAX_SUBMIT=5
REAL_MEMORY=16000               # MB each node declares: 8 GB jobs fit (configs/sherlock.yaml's pack, slurm/driver.sbatch)
DEF_MEM_PER_CPU=500             # MB a job gets per CPU without --mem
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

# die MESSAGE: print the error and the tail of every daemon log, the log of
# the daemon named in $FAILED (if set) last and longest, so that it is what a
# CI job's output ends with.
die() {
    trap - ERR
    log "ERROR: $*"
    local d f
    for f in "$LOG_DIR"/{munged,mariadbd,slurmdbd,slurmctld}.log "$LOG_DIR"/slurmd-*.log; do
        d="${f##*/}"
        d="${d%.log}"
        [[ -s "$f" && "$d" != "${FAILED:-}" ]] || continue
        printf '\n----- last lines of %s -----\n' "$f" >&2
        tail -n 8 "$f" >&2
    done
    f="$LOG_DIR/${FAILED:-none}.log"
    if [[ -s "$f" ]]; then
        printf '\n----- last lines of %s -----\n' "$f" >&2
        tail -n 40 "$f" >&2
    fi
    log "ERROR: $*"
    log "state folder: $STATE (run down.sh to stop whatever did start)"
    exit 1
}
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds.
wait_until() {
    local timeout="$1" what="$2" deadline
    shift 2
    deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
        sleep 0.2
    done
}

# wait_daemon NAME SECONDS DESCRIPTION COMMAND...: like wait_until, but give
# up at once if daemon NAME has died (e.g. a port already in use) instead of
# waiting for the timeout. The daemon writes its PID file itself; if there is
# none after 10 s it never got going.
wait_daemon() {
    local name="$1" timeout="$2" what="$3" start=$SECONDS
    shift 3
    until "$@" >/dev/null 2>&1; do
        # (-s, not -e: a daemon creates its PID file empty, then writes it.)
        if ! daemon_alive "$name" && { [[ -s "$(pid_file "$name")" ]] || ((SECONDS - start >= 10)); }; then
            FAILED="$name" die "$name died while waiting for $what"
        fi
        ((SECONDS - start < timeout)) || FAILED="$name" die "timed out after ${timeout}s waiting for $what"
        sleep 0.2
    done
}

# --------------------------------------------------------------------------
# Sanity checks
# --------------------------------------------------------------------------
fail() { log "ERROR: $*"; exit 1; }
[[ "$(id -u)" == 0 ]] || fail "must run as root (daemons run as root)"
[[ "$MAX_ARRAY_SIZE" =~ ^[0-9]+$ && "$MAX_ARRAY_SIZE" -ge 1 ]] \
    || fail "ZHPC_SLURM_MAX_ARRAY_SIZE must be a positive integer, got '$MAX_ARRAY_SIZE'"
[[ "$CPUS" =~ ^[0-9]+$ && "$CPUS" -ge 1 ]] \
    || fail "ZHPC_SLURM_CPUS must be a positive integer, got '$CPUS'"
[[ "$NODES" =~ ^[0-9]+$ && "$NODES" -ge 1 && "$NODES" -le 16 ]] \
    || fail "ZHPC_SLURM_NODES must be an integer from 1 to 16, got '$NODES'"
[[ "$CGROUP_WANTED" =~ ^(auto|v1|v2|none)$ ]] \
    || fail "ZHPC_SLURM_CGROUP must be auto, v1, v2 or none, got '$CGROUP_WANTED'"
[[ "$NODE_PREFIX" =~ ^[a-z][a-z0-9]*$ ]] \
    || fail "ZHPC_SLURM_NODE_PREFIX must be lower-case letters/digits, got '$NODE_PREFIX'"
[[ "$PORT_OFFSET" =~ ^[0-9]+$ && "$PORT_OFFSET" -le 30000 ]] \
    || fail "ZHPC_SLURM_PORT_OFFSET must be an integer from 0 to 30000, got '$PORT_OFFSET'"
# Unix socket paths are limited to 107 bytes; fail clearly rather than with a
# cryptic munged/mariadb error.
((${#MUNGE_SOCKET} < 100 && ${#DB_SOCKET} < 100)) \
    || fail "ZHPC_SLURM_DIR '$STATE' is too long for unix socket paths"
# MaxJobCount must leave room for a whole array plus some.
MAX_JOB_COUNT=$((MAX_ARRAY_SIZE + 1000 > 10000 ? MAX_ARRAY_SIZE + 1000 : 10000))
CTLD_PORT=$((6817 + PORT_OFFSET))
DBD_PORT=$((6819 + PORT_OFFSET))
SLURMD_PORT_BASE=$((17000 + PORT_OFFSET))   # node i listens on base + i
# 1. Packages (Debian's slurm-wlm 22.05 + munge + mariadb)
# --------------------------------------------------------------------------
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]} (apt-get)"
    # Without systemd, the packages' maintainer scripts would start the
    # *system* munge/mariadb/slurm via /etc/init.d. We run our own copies, so
    # forbid service starts during the install (policy-rc.d exit 101), unless
    # the image already has a policy (Docker images usually do).
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}"
    } > "$LOG_DIR/apt.log" 2>&1 || rc=$?
    ((own_policy)) && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || { tail -n 30 "$LOG_DIR/apt.log" >&2; die "apt-get install failed (see $LOG_DIR/apt.log)"; }
}


# --------------------------------------------------------------------------
# 2. What this host offers: the Slurm version (some lines differ between
#    22.05 and 24.11) and the cgroup version (jobs contained or not).
# --------------------------------------------------------------------------
detect_slurm_version() {
    local v
    # "slurm-wlm 22.05.8" (Debian 12), "slurm 24.11.5" (Debian 13)
    v="$(slurmctld -V 2>/dev/null | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n 1)" \
        || die "cannot tell the Slurm version from 'slurmctld -V'"
    [[ -n "$v" ]] || die "cannot tell the Slurm version from 'slurmctld -V': $(slurmctld -V 2>&1)"
    SLURM_VERSION="$v"
    # 22.05 -> 2205, 24.11 -> 2411: easy to compare.
    SLURM_VERNUM=$((10#${v%%.*} * 100 + 10#$(cut -d. -f2 <<<"$v")))
}

# Sets ENFORCE (cgroup/v1, cgroup/v2 or none) and, for none, NO_ENFORCEMENT
# (why). v1 needs the memory, freezer and cpuacct controllers mounted under
# /sys/fs/cgroup (Debian 12 hosts, hybrid layout); v2 needs the unified
# hierarchy there with the memory controller (Debian 13 hosts).
choose_enforcement() {
    local fstype v1=0 v2=0 why_not=""
    NO_ENFORCEMENT=""
    fstype="$(stat -fc %T "$CGROUP_ROOT" 2>/dev/null || echo none)"
    if [[ "$fstype" == cgroup2fs ]]; then
        if grep -qw memory "$CGROUP_ROOT/cgroup.controllers" 2>/dev/null; then
            v2=1
        else
            why_not="cgroup v2 at $CGROUP_ROOT has no memory controller"
        fi
    elif [[ -w "$CGROUP_ROOT/freezer" && -w "$CGROUP_ROOT/memory" && -d "$CGROUP_ROOT/cpuacct" ]]; then
        v1=1
    else
        why_not="no cgroup v1 freezer/memory/cpuacct controllers (writable) nor cgroup v2 under $CGROUP_ROOT"
    fi
    case "$CGROUP_WANTED" in
        none) ENFORCE=none; NO_ENFORCEMENT="ZHPC_SLURM_CGROUP=none" ;;
        v1) ENFORCE=cgroup/v1 ;;        # as asked; falls back if slurmd fails
        v2) ENFORCE=cgroup/v2 ;;
        auto)
            if ((v2)); then ENFORCE=cgroup/v2
            elif ((v1)); then ENFORCE=cgroup/v1
            else ENFORCE=none; NO_ENFORCEMENT="$why_not"
            fi ;;
    esac
    # A mode that already failed on this cluster is not retried on every
    # up.sh (down.sh forgets it): that keeps a second up.sh instant.
    local failed="$STATE/enforcement.failed"
    if [[ "$ENFORCE" != none && -s "$failed" && "$(head -n 1 "$failed")" == "$ENFORCE" ]]; then
        NO_ENFORCEMENT="$(tail -n 1 "$failed")"
        ENFORCE=none
    fi
}

# --------------------------------------------------------------------------
# 3. Config files, rendered from the templates next to this script into
#    <state>/etc/*.new; install_configs moves them in place.
# --------------------------------------------------------------------------
node_name() { printf '%s%d' "$NODE_PREFIX" "$1"; }

node_names() {
    local i
    for ((i = 1; i <= NODES; i++)); do node_name "$i"; echo; done
}

# The lines that differ with ENFORCE.
enforcement_lines() {
    if [[ "$ENFORCE" == none ]]; then
        printf '%s\n' "ProctrackType=proctrack/linuxproc" "TaskPlugin=task/none" \
            "JobAcctGatherType=jobacct_gather/linux" "JobAcctGatherFrequency=task=1"
    else
        printf '%s\n' "ProctrackType=proctrack/cgroup" "TaskPlugin=task/cgroup" \
            "JobAcctGatherType=jobacct_gather/cgroup" "JobAcctGatherFrequency=task=1"
    fi
}

# cgroup.conf for ENFORCE=cgroup/v1|v2. Options that are version specific:
#  * CgroupAutomount is defunct from 23.11 on (an error in the logs), and
#    "no" is its default anyway, so it is written for older versions only.
#  * cgroup/v2 without systemd needs IgnoreSystemd=yes (slurmd then makes its
#    own <node>_slurmstepd.scope under system.slice) and the controllers
#    enabled there: EnableControllers=yes from 23.11, CgroupAutomount=yes
#    before.
#  * Swap is only constrained when the kernel accounts it (memsw files).
render_cgroup_conf() {
    local swap=no
    {
        echo "# Generated by slurm/dev-cluster/up.sh ($ENFORCE, Slurm $SLURM_VERSION) -- not edited by hand."
        echo "CgroupPlugin=$ENFORCE"
        echo "CgroupMountpoint=$CGROUP_ROOT"
        if [[ "$ENFORCE" == cgroup/v1 ]]; then
            ((SLURM_VERNUM < 2311)) && echo "CgroupAutomount=no"
            [[ -e "$CGROUP_ROOT/memory/memory.memsw.limit_in_bytes" ]] && swap=yes
        else
            echo "IgnoreSystemd=yes"
            if ((SLURM_VERNUM >= 2311)); then echo "EnableControllers=yes"; else echo "CgroupAutomount=yes"; fi
            compgen -G "$CGROUP_ROOT/*/memory.swap.max" >/dev/null && swap=yes
        fi
        # Cores are not constrained: the nodes declare more CPUs than exist.
        echo "ConstrainCores=no"
        echo "ConstrainDevices=no"
        echo "ConstrainRAMSpace=yes"
        echo "ConstrainSwapSpace=$swap"
        echo "AllowedSwapSpace=0"
    } > "$1"
}

render() {
    local text i node_lines="" preempt_line
    for ((i = 1; i <= NODES; i++)); do
        node_lines+="NodeName=$(node_name "$i") NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((SLURMD_PORT_BASE + i))"
        node_lines+=" CPUs=$CPUS RealMemory=$REAL_MEMORY State=UNKNOWN"$'\n'
    done
    # Send the job's --signal (submitit's USR2) as soon as it is picked for
    # preemption: a SlurmctldParameters flag in 22.05 (PreemptParameters is a
    # fatal unknown key there), PreemptParameters from 23.02 on.
    if ((SLURM_VERNUM >= 2302)); then
        preempt_line="PreemptParameters=send_user_signal"
    else
        preempt_line="SlurmctldParameters=preempt_send_user_signal"
    fi
    text="$(<"$1")"
    text="${text//@STATE@/$STATE}"
    text="${text//@HOST@/$HOST}"
    text="${text//@CLUSTER@/$CLUSTER}"
    text="${text//@CTLD_PORT@/$CTLD_PORT}"
    text="${text//@DBD_PORT@/$DBD_PORT}"
    text="${text//@MAX_ARRAY_SIZE@/$MAX_ARRAY_SIZE}"
    text="${text//@MAX_JOB_COUNT@/$MAX_JOB_COUNT}"
    text="${text//@MUNGE_SOCKET@/$MUNGE_SOCKET}"
    text="${text//@DEF_MEM_PER_CPU@/$DEF_MEM_PER_CPU}"
    text="${text//@SLURM_VERSION@/$SLURM_VERSION}"
    text="${text//@ENFORCEMENT@/$ENFORCE}"
    text="${text//@ENFORCEMENT_LINES@/$(enforcement_lines)}"
    text="${text//@PREEMPT_SIGNAL_LINE@/$preempt_line}"
    text="${text//@NODE_LINES@/${node_lines%$'\n'}}"
    text="${text//@NODE_LIST@/${NODE_PREFIX}[1-$NODES]}"
    printf '%s\n' "$text" > "$2"
}

# Render everything into *.new; set ctl_changed/dbd_changed.
render_all() {
    render "$HERE/slurm.conf.in" "$ETC_DIR/slurm.conf.new"
    render "$HERE/slurmdbd.conf.in" "$ETC_DIR/slurmdbd.conf.new"
    chmod 600 "$ETC_DIR/slurmdbd.conf.new"   # slurmdbd refuses a readable one
    if [[ "$ENFORCE" == none ]]; then
        : > "$ETC_DIR/cgroup.conf.new"        # empty = no cgroup.conf
    else
        render_cgroup_conf "$ETC_DIR/cgroup.conf.new"
    fi
    ctl_changed=0
    dbd_changed=0
    cmp -s "$ETC_DIR/slurm.conf.new" "$ETC_DIR/slurm.conf" || ctl_changed=1
    cmp -s "$ETC_DIR/cgroup.conf.new" "$ETC_DIR/cgroup.conf" 2>/dev/null \
        || [[ ! -s "$ETC_DIR/cgroup.conf.new" && ! -e "$ETC_DIR/cgroup.conf" ]] || ctl_changed=1
    cmp -s "$ETC_DIR/slurmdbd.conf.new" "$ETC_DIR/slurmdbd.conf" || dbd_changed=1
}

install_configs() {
    mv -f "$ETC_DIR/slurm.conf.new" "$ETC_DIR/slurm.conf"
    mv -f "$ETC_DIR/slurmdbd.conf.new" "$ETC_DIR/slurmdbd.conf"
    if [[ -s "$ETC_DIR/cgroup.conf.new" ]]; then
        mv -f "$ETC_DIR/cgroup.conf.new" "$ETC_DIR/cgroup.conf"
    else
        rm -f "$ETC_DIR/cgroup.conf.new" "$ETC_DIR/cgroup.conf"
    fi
}

# --------------------------------------------------------------------------
# 4. Daemons, in dependency order: munged -> mariadbd -> slurmdbd ->
#    slurmctld -> one slurmd per node. Each start_* is a no-op if already
#    running. Daemons get </dev/null and their output in a log so they never
#    hold the caller's stdout open (a `up.sh | tee` in CI would otherwise
#    hang), and fd 9 (our lock, see take_lock) closed so they do not hold it.
# --------------------------------------------------------------------------
munge_ok() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET"; }

start_munged() {
    daemon_alive munged && return 0
    # Our own key, so we never depend on (or disturb) /etc/munge.
    [[ -s "$MUNGE_DIR/munge.key" ]] || mungekey --create --keyfile="$MUNGE_DIR/munge.key"
    chmod 600 "$MUNGE_DIR/munge.key"
    log "starting munged"
    rm -f "$(pid_file munged)"   # stale; wait_daemon watches for the new one
    # --force: run as root and replace a stale socket left by a crash.
    munged --force --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$(pid_file munged)" --log-file="$LOG_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" </dev/null >>"$LOG_DIR/munged.log" 2>&1 9>&- \
        || FAILED=munged die "munged failed to start"
    wait_daemon munged 15 "munged to answer on $MUNGE_SOCKET" munge_ok
}

mariadb_ok() { mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping; }

start_mariadbd() {
    if ! daemon_alive mariadbd; then
        if [[ ! -d "$DB_DIR/data/mysql" ]]; then
            log "initialising mariadb data dir"
            # root@localhost authenticates by unix uid (unix_socket plugin): no password.
            mariadb-install-db --no-defaults --user=root --datadir="$DB_DIR/data" \
                --auth-root-authentication-method=socket --skip-test-db \
                > "$LOG_DIR/mariadb-install-db.log" 2>&1 \
                || die "mariadb-install-db failed (see $LOG_DIR/mariadb-install-db.log)"
        fi
        log "starting mariadbd"
        rm -f "$(pid_file mariadbd)"   # stale; wait_daemon watches for the new one
        # --no-defaults: ignore /etc/mysql. --skip-networking: socket only, no
        # port 3306 to clash with. InnoDB sizes are what slurmdbd recommends.
        setsid mariadbd --no-defaults --user=root --datadir="$DB_DIR/data" \
            --socket="$DB_SOCKET" --skip-networking --pid-file="$(pid_file mariadbd)" \
            --log-error="$LOG_DIR/mariadbd.log" \
            --innodb-buffer-pool-size=512M --innodb-log-file-size=64M \
            --innodb-lock-wait-timeout=900 \
            </dev/null >>"$LOG_DIR/mariadbd.log" 2>&1 9>&- &
        wait_daemon mariadbd 60 "mariadbd to answer on $DB_SOCKET" mariadb_ok
        wait_daemon mariadbd 10 "mariadbd pid file" daemon_alive mariadbd
    fi
    mariadb --no-defaults --socket="$DB_SOCKET" -u root \
        -e 'CREATE DATABASE IF NOT EXISTS slurm_acct_db' \
        || FAILED=mariadbd die "could not create the slurm_acct_db database"
}

dbd_ok() { timeout 10 sacctmgr -n show cluster; }

start_slurmdbd() {
    daemon_alive slurmdbd && return 0
    log "starting slurmdbd"
    rm -f "$(pid_file slurmdbd)"   # stale; wait_daemon watches for the new one
    # The mariadb client library takes the socket for "localhost" from
    # MYSQL_UNIX_PORT (slurmdbd.conf has no socket option).
    MYSQL_UNIX_PORT="$DB_SOCKET" slurmdbd </dev/null >>"$LOG_DIR/slurmdbd.log" 2>&1 9>&- \
        || FAILED=slurmdbd die "slurmdbd failed to start"
    wait_daemon slurmdbd 30 "slurmdbd to answer sacctmgr" dbd_ok
}

# Cluster, account and user associations, so that jobs are accounted under a
# real association (sacct shows Account=zhpc), and the QOS `limited` that
# root may ask for (--qos=limited: at most 5 jobs/array tasks queued).
register_accounting() {
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        log "registering cluster $CLUSTER in accounting"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    if ! sacctmgr -n -P show account "$ACCOUNT" format=account | grep -qx "$ACCOUNT"; then
        sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" \
            Description="zenodo_hpc dev cluster" Organization=zenodo_hpc >/dev/null
    fi
    if ! sacctmgr -n -P show assoc cluster="$CLUSTER" account="$ACCOUNT" user=root format=user \
            | grep -qx root; then
        sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
    fi
    if [[ "$(sacctmgr -n -P show user root format=defaultaccount)" != "$ACCOUNT" ]]; then
        sacctmgr -i modify user root set DefaultAccount="$ACCOUNT" >/dev/null
    fi
    if ! sacctmgr -n -P show qos "$QOS" format=name | grep -qx "$QOS"; then
        sacctmgr -i add qos "$QOS" MaxSubmitJobsPerUser="$QOS_MAX_SUBMIT" >/dev/null
    fi
    if ! sacctmgr -n -P show assoc cluster="$CLUSTER" account="$ACCOUNT" user=root format=qos \
            | tr ',' '\n' | grep -qx "$QOS"; then
        sacctmgr -i modify user where name=root cluster="$CLUSTER" account="$ACCOUNT" \
            set qos+="$QOS" >/dev/null
    fi
}

ctld_ok() { timeout 10 scontrol ping | grep -q 'is UP'; }

start_slurmctld() {
    daemon_alive slurmctld && return 0
    log "starting slurmctld"
    rm -f "$(pid_file slurmctld)"   # stale; wait_daemon watches for the new one
    slurmctld </dev/null >>"$LOG_DIR/slurmctld.log" 2>&1 9>&- || FAILED=slurmctld die "slurmctld failed to start"
    wait_daemon slurmctld 30 "slurmctld to answer scontrol ping" ctld_ok
}

# Several slurmd's on one host need a Slurm built with multiple-slurmd
# support (Debian's is: `scontrol show config` says MULTIPLE_SLURMD = Yes).
# (Not `| grep -q`: with pipefail, grep quitting early fails the pipe.)
multiple_slurmd() {
    local config
    config="$(scontrol show config 2>/dev/null)" || return 1
    grep -Eq '^MULTIPLE_SLURMD *= *(Yes|yes|1)' <<<"$config"
}

# Start the slurmd of every node that has none running, and wait until all
# nodes are ready. Returns 1 (rather than dying) with FAILED set if a slurmd
# dies or a node is not ready within 30 s, so the caller can fall back to
# the no-cgroup config.
start_nodes() {
    local node start=$SECONDS all
    for node in $(node_names); do
        daemon_alive "slurmd-$node" && continue
        log "starting slurmd for $node"
        install -d -m 755 "$SPOOL_DIR/slurmd-$node"
        rm -f "$(pid_file "slurmd-$node")"
        slurmd -N "$node" </dev/null >>"$LOG_DIR/slurmd-$node.log" 2>&1 9>&- || { FAILED="slurmd-$node"; return 1; }
    done
    while :; do
        all=1
        for node in $(node_names); do
            if ! daemon_alive "slurmd-$node" && { [[ -s "$(pid_file "slurmd-$node")" ]] || ((SECONDS - start >= 10)); }; then
                FAILED="slurmd-$node"
                return 1
            fi
            node_ready "$node" >/dev/null 2>&1 || all=0
        done
        ((all)) && return 0
        ((SECONDS - start < 30)) || { FAILED="slurmd-$(node_name 1)"; return 1; }
        sleep 0.2
    done
}

# Jobs that slurmctld recovered from its saved state when it starts on a
# cluster that was down (the machine rebooted, or it is a copy of another
# machine, or down.sh stopped it mid-job): their processes are gone, but they
# would be listed RUNNING or PENDING, hold CPUs and run again. A cluster that
# comes up from down comes up empty.
cancel_jobs_of_a_previous_life() {
    local stale
    stale="$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)"
    [[ -n "${stale// /}" ]] || return 0
    log "cancelling jobs left from the cluster's previous life: $stale"
    # shellcheck disable=SC2086  # one job id a word
    timeout 30 scancel $stale >/dev/null 2>&1 || true
    for _ in $(seq 1 120); do
        [[ -z "$(timeout 10 squeue -h -o %A 2>/dev/null || echo busy)" ]] && return 0
        sleep 0.5
    done
    log "WARNING: still listed after cancelling: $(timeout 10 squeue -h -o '%A %T' | tr '\n' ' ')"
}

stop_slurm() {
    local d
    for d in $(slurmd_daemons); do stop_daemon "$d"; done
    stop_daemon slurmctld
}

# --------------------------------------------------------------------------
# 5. Self-test: a batch job and an srun step on every node really run, and
#    sacct records them; with enforcement, a job over its --mem is killed.
# --------------------------------------------------------------------------
self_test() {
    local dir="$STATE/selftest" jobid out node
    FAILED="slurmd-$(node_name 1)"   # job launch problems show up in slurmd logs
    mkdir -p "$dir"
    log "self-test: sbatch --wait"
    # shellcheck disable=SC2016  # $SLURMD_NODENAME is the job's, not ours
    jobid="$(timeout 120 sbatch --parsable --wait -p debug -t 1 -J zhpc-selftest \
        -o "$dir/batch-%j.out" --wrap 'echo "on $SLURMD_NODENAME"')" \
        || die "self-test batch job failed or timed out"
    jobid="${jobid%%;*}"
    grep -q "on $NODE_PREFIX" "$dir/batch-$jobid.out" \
        || die "self-test job $jobid output lacks the node name: $(cat "$dir/batch-$jobid.out" 2>&1)"
    log "self-test: srun on all $NODES node(s)"
    out="$(timeout 60 srun -p debug -t 1 -N "$NODES" --ntasks-per-node=1 -J zhpc-selftest \
        printenv SLURMD_NODENAME 2>&1)" || die "self-test srun failed: $out"
    for node in $(node_names); do
        grep -qx "$node" <<<"$out" || die "self-test srun printed '$out', nothing from $node"
    done
    log "self-test: sacct -j $jobid"
    wait_until 30 "sacct to show job $jobid COMPLETED" \
        bash -c "sacct -n -X -P -j '$jobid' -o State | grep -qx COMPLETED"
    FAILED=
}

# A job that grows past its --mem must end OUT_OF_MEMORY. If it does not, the
# cluster still runs, but ZHPC_SLURM_NO_ENFORCEMENT says why (tests skip).
enforcement_test() {
    local jobid state
    log "self-test: a job over its --mem ends OUT_OF_MEMORY"
    # `tail` keeps a newline-free stream in memory: 300 MB against 40 MB.
    jobid="$(timeout 60 sbatch --parsable --wait -p debug -t 1 --mem=40M -J zhpc-selftest-oom \
        -o /dev/null --wrap 'head -c 300M /dev/zero | tail >/dev/null' 2>/dev/null)" || true
    jobid="${jobid%%;*}"
    if [[ -z "$jobid" ]]; then
        jobid="$(sacct -n -X -P -o JobID --name=zhpc-selftest-oom | tail -n 1)"
    fi
    for _ in $(seq 1 50); do
        state="$(sacct -n -X -P -j "$jobid" -o State 2>/dev/null | head -n 1)"
        [[ -n "$state" && "$state" != RUNNING && "$state" != PENDING ]] && break
        sleep 0.2
    done
    if [[ "$state" != OUT_OF_MEMORY ]]; then
        NO_ENFORCEMENT="$ENFORCE is configured but a job over its --mem ended '$state', not OUT_OF_MEMORY (job $jobid)"
        log "WARNING: $NO_ENFORCEMENT"
    fi
}

# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
start_time=$SECONDS
take_lock
install -d -m 755 "$STATE" "$ETC_DIR" "$RUN_DIR" "$LOG_DIR" "$SPOOL_DIR" \
    "$SPOOL_DIR/slurmctld" "$MUNGE_DIR" "$MUNGE_SOCKET_DIR" "$DB_DIR"
# munged insists that its socket directory is not writable by others.
chmod 755 "$STATE" "$MUNGE_DIR" "$MUNGE_SOCKET_DIR"

install_packages

# Don't let the caller's Slurm environment (e.g. up.sh run inside a job on a
# real cluster, or SBATCH_PARTITION set) leak into our daemons and clients.
for v in $(compgen -e | grep -E '^(SLURM|SBATCH|SRUN|SALLOC|SQUEUE|SACCT|SINFO|SCONTROL)_' || true); do
    unset "$v"
done
export SLURM_CONF="$SLURM_CONF_FILE"

detect_slurm_version
choose_enforcement
# A Slurm without multiple-slurmd support found on an earlier run: one node.
[[ -e "$STATE/single-slurmd" ]] && NODES=1

# Render into temporary files first so we can tell whether the config changed.
render_all

print_env() {
    {
        printf 'export SLURM_CONF=%q\n' "$SLURM_CONF_FILE"
        printf 'export ZHPC_SLURM_DIR=%q\n' "$STATE"
        printf 'export ZHPC_SLURM_ENFORCEMENT=%q\n' "$ENFORCE"
        if [[ -n "$NO_ENFORCEMENT" ]]; then
            printf 'export ZHPC_SLURM_NO_ENFORCEMENT=%q\n' "$NO_ENFORCEMENT"
        else
            printf 'unset ZHPC_SLURM_NO_ENFORCEMENT\n'
        fi
    } > "$ENFORCEMENT_FILE"
    { echo '# Source me to use the zenodo_hpc dev SLURM cluster'; cat "$ENFORCEMENT_FILE"; } > "$ENV_FILE"
    cat "$ENFORCEMENT_FILE"
}

all_alive=1
for d in "${DAEMONS[@]}"; do daemon_alive "$d" || all_alive=0; done
for node in $(node_names); do daemon_alive "slurmd-$node" || all_alive=0; done
# A slurmd of a node that is no longer configured (fewer nodes, old layout).
for d in $(slurmd_daemons); do
    if ! grep -qx "${d#slurmd-}" <(node_names) && daemon_alive "$d"; then ctl_changed=1; fi
done

nodes_ready() {
    local node
    for node in $(node_names); do node_ready "$node" || return 1; done
}

if ((all_alive && !ctl_changed && !dbd_changed)) && ctld_ok && nodes_ready; then
    rm -f "$ETC_DIR"/*.new
    # Keep what the last full run found about enforcement (its self-test).
    if [[ -s "$ENFORCEMENT_FILE" ]]; then
        # shellcheck disable=SC1090
        source "$ENFORCEMENT_FILE"
        NO_ENFORCEMENT="${ZHPC_SLURM_NO_ENFORCEMENT:-}"
    fi
    log "already up: $(sinfo -h -o '%P %a %D %T' | tr '\n' ' ')($ENFORCE, state $STATE)"
    print_env
    exit 0
fi

# Whether slurmctld was running: if not, the jobs it recovers are stale.
ctld_was_up=0
daemon_alive slurmctld && ctld_was_up=1

# A knob changed while running: restart the daemons that read the changed
# file (jobs and accounting data survive; slurmctld keeps its state).
if ((ctl_changed)); then
    daemon_alive slurmctld && log "slurm config changed; restarting slurmctld and the slurmd's"
    stop_slurm
fi
if ((dbd_changed)); then
    daemon_alive slurmdbd && log "slurmdbd.conf changed; restarting slurmdbd"
    stop_daemon slurmdbd
fi
install_configs

start_munged
start_mariadbd
start_slurmdbd        # must be up before slurmctld, or accounting is lost
register_accounting
start_slurmctld

if ((NODES > 1)) && ! multiple_slurmd; then
    log "WARNING: this Slurm is built without multiple-slurmd support: one node only"
    touch "$STATE/single-slurmd"
    NODES=1
    stop_slurm
    render_all
    install_configs
    start_slurmctld
fi

if ! start_nodes; then
    [[ "$ENFORCE" != none ]] || die "$FAILED did not come up"
    reason="$(grep -hE 'error|fatal' "$LOG_DIR/$FAILED.log" 2>/dev/null | tail -n 1 || true)"
    reason="slurmd failed to start with $ENFORCE: ${reason:-see $LOG_DIR/$FAILED.log}"
    log "WARNING: $reason; falling back to no enforcement (proctrack/linuxproc, task/none)"
    printf '%s\n%s\n' "$ENFORCE" "$reason" > "$STATE/enforcement.failed"
    ENFORCE=none
    NO_ENFORCEMENT="$reason"
    stop_slurm
    render_all
    install_configs
    start_slurmctld
    start_nodes || die "$FAILED did not come up, even without cgroups"
fi

((ctld_was_up)) || cancel_jobs_of_a_previous_life
self_test
[[ "$ENFORCE" == none ]] || enforcement_test

print_env
log "up in $((SECONDS - start_time))s: $(sinfo -V), $NODES node(s), enforcement $ENFORCE${NO_ENFORCEMENT:+ (none: $NO_ENFORCEMENT)}, partitions: $(sinfo -h -o '%P' | tr '\n' ' ')"
log "run 'source $ENV_FILE' to use it; 'bash $HERE/down.sh' to stop it"
