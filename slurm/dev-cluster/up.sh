#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster (slurmctld + slurmd + slurmdbd +
# munged + mariadbd) for development and CI, without systemd.
#
#   bash slurm/dev-cluster/up.sh          # logs go to stderr
#   source /tmp/zenodo-hpc-slurm/env.sh   # or: eval "$(bash slurm/dev-cluster/up.sh)"
#
# Environment knobs:
#   ZHPC_SLURM_DIR             state folder (default /tmp/zenodo-hpc-slurm)
#   ZHPC_SLURM_MAX_ARRAY_SIZE  slurm.conf MaxArraySize (default 1001)
#   ZHPC_SLURM_CPUS            CPUs the node declares (default 4)
#
# Only the `export SLURM_CONF=...` line is printed on stdout; everything else
# goes to stderr. Idempotent: if the cluster is already up with the same
# config it just says so. If a knob changed, the slurm daemons are restarted
# with the new config (munged, mariadb and the accounting data are kept).
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$HERE/common.sh"

MAX_ARRAY_SIZE="${ZHPC_SLURM_MAX_ARRAY_SIZE:-1001}"
CPUS="${ZHPC_SLURM_CPUS:-4}"
NODE="$(hostname -s)"
CLUSTER="zhpc-dev"
ACCOUNT="zhpc"
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

# die MESSAGE: print the error and the tail of every daemon log, the log of
# the daemon named in $FAILED (if set) last and longest, so that it is what a
# CI job's output ends with.
die() {
    trap - ERR
    log "ERROR: $*"
    local d f
    for d in "${DAEMONS[@]}"; do
        f="$LOG_DIR/$d.log"
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
        if ! daemon_alive "$name" && { [[ -e "$(pid_file "$name")" ]] || ((SECONDS - start >= 10)); }; then
            FAILED="$name" die "$name died while waiting for $what"
        fi
        ((SECONDS - start < timeout)) || FAILED="$name" die "timed out after ${timeout}s waiting for $what"
        sleep 0.2
    done
}

# --------------------------------------------------------------------------
# Sanity checks
# --------------------------------------------------------------------------
[[ "$(id -u)" == 0 ]] || { log "ERROR: must run as root (daemons run as root)"; exit 1; }
[[ "$MAX_ARRAY_SIZE" =~ ^[0-9]+$ && "$MAX_ARRAY_SIZE" -ge 1 ]] \
    || { log "ERROR: ZHPC_SLURM_MAX_ARRAY_SIZE must be a positive integer, got '$MAX_ARRAY_SIZE'"; exit 1; }
[[ "$CPUS" =~ ^[0-9]+$ && "$CPUS" -ge 1 ]] \
    || { log "ERROR: ZHPC_SLURM_CPUS must be a positive integer, got '$CPUS'"; exit 1; }
# Unix socket paths are limited to 107 bytes; fail clearly rather than with a
# cryptic munged/mariadb error.
((${#MUNGE_SOCKET} < 100 && ${#DB_SOCKET} < 100)) \
    || { log "ERROR: ZHPC_SLURM_DIR '$STATE' is too long for unix socket paths"; exit 1; }
# MaxJobCount must leave room for a whole array plus some.
MAX_JOB_COUNT=$((MAX_ARRAY_SIZE + 1000 > 10000 ? MAX_ARRAY_SIZE + 1000 : 10000))

# --------------------------------------------------------------------------
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
# 2. Config files (rendered from the templates next to this script)
# --------------------------------------------------------------------------
render() {
    local text
    text="$(<"$1")"
    text="${text//@STATE@/$STATE}"
    text="${text//@NODE@/$NODE}"
    text="${text//@CLUSTER@/$CLUSTER}"
    text="${text//@CPUS@/$CPUS}"
    text="${text//@MAX_ARRAY_SIZE@/$MAX_ARRAY_SIZE}"
    text="${text//@MAX_JOB_COUNT@/$MAX_JOB_COUNT}"
    text="${text//@MUNGE_SOCKET@/$MUNGE_SOCKET}"
    printf '%s\n' "$text" > "$2"
}

# --------------------------------------------------------------------------
# 3. Daemons, in dependency order: munged -> mariadbd -> slurmdbd ->
#    slurmctld -> slurmd. Each start_* is a no-op if already running.
#    Daemons get </dev/null and their output in a log so they never hold the
#    caller's stdout open (a `up.sh | tee` in CI would otherwise hang), and
#    fd 9 (our lock, see take_lock) closed so they do not hold the lock.
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
# real association (sacct shows Account=zhpc).
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
}

ctld_ok() { timeout 10 scontrol ping | grep -q 'is UP'; }

start_slurmctld() {
    daemon_alive slurmctld && return 0
    log "starting slurmctld"
    rm -f "$(pid_file slurmctld)"   # stale; wait_daemon watches for the new one
    slurmctld </dev/null >>"$LOG_DIR/slurmctld.log" 2>&1 9>&- || FAILED=slurmctld die "slurmctld failed to start"
    wait_daemon slurmctld 30 "slurmctld to answer scontrol ping" ctld_ok
}

# Node is usable once it reports idle/mixed/allocated. A node left drained or
# down by an earlier run (e.g. a job that could not be killed) is resumed:
# this is a throwaway dev cluster.
node_ready() {
    local st
    st="$(timeout 10 sinfo -h -N -n "$NODE" -o %T | head -n 1)"
    case "$st" in
        idle* | mixed* | allocated* | completing*) return 0 ;;
        drain* | down*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    return 1
}

start_slurmd() {
    daemon_alive slurmd || {
        log "starting slurmd"
        rm -f "$(pid_file slurmd)"   # stale; wait_daemon watches for the new one
        slurmd -N "$NODE" </dev/null >>"$LOG_DIR/slurmd.log" 2>&1 9>&- || FAILED=slurmd die "slurmd failed to start"
    }
    wait_daemon slurmd 30 "node $NODE to become idle" node_ready
}

# --------------------------------------------------------------------------
# 4. Self-test: a batch job and an srun step really run, and sacct records it
# --------------------------------------------------------------------------
self_test() {
    local dir="$STATE/selftest" jobid out
    FAILED=slurmd   # job launch problems show up in slurmd.log
    mkdir -p "$dir"
    log "self-test: sbatch --wait hostname"
    jobid="$(timeout 120 sbatch --parsable --wait -p debug -t 1 -J zhpc-selftest \
        -o "$dir/hostname-%j.out" --wrap hostname)" || die "self-test batch job failed or timed out"
    jobid="${jobid%%;*}"
    grep -q "$NODE" "$dir/hostname-$jobid.out" \
        || die "self-test job $jobid output lacks '$NODE': $(cat "$dir/hostname-$jobid.out" 2>&1)"
    log "self-test: srun hostname"
    out="$(timeout 60 srun -p debug -t 1 -N 1 -n 1 -J zhpc-selftest hostname 2>&1)" \
        || die "self-test srun failed: $out"
    [[ "$out" == *"$NODE"* ]] || die "self-test srun printed '$out', expected '$NODE'"
    log "self-test: sacct -j $jobid"
    wait_until 30 "sacct to show job $jobid COMPLETED" \
        bash -c "sacct -n -X -P -j '$jobid' -o State | grep -qx COMPLETED"
    FAILED=
}

# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
start_time=$SECONDS
take_lock
install -d -m 755 "$STATE" "$ETC_DIR" "$RUN_DIR" "$LOG_DIR" "$SPOOL_DIR" \
    "$SPOOL_DIR/slurmctld" "$SPOOL_DIR/slurmd" "$MUNGE_DIR" "$MUNGE_SOCKET_DIR" "$DB_DIR"
# munged insists that its socket directory is not writable by others.
chmod 755 "$STATE" "$MUNGE_DIR" "$MUNGE_SOCKET_DIR"

install_packages

# Don't let the caller's Slurm environment (e.g. up.sh run inside a job on a
# real cluster, or SBATCH_PARTITION set) leak into our daemons and clients.
for v in $(compgen -e | grep -E '^(SLURM|SBATCH|SRUN|SALLOC|SQUEUE|SACCT|SINFO|SCONTROL)_' || true); do
    unset "$v"
done
export SLURM_CONF="$SLURM_CONF_FILE"

# Render into temporary files first so we can tell whether the config changed.
render "$HERE/slurm.conf.in" "$ETC_DIR/slurm.conf.new"
render "$HERE/slurmdbd.conf.in" "$ETC_DIR/slurmdbd.conf.new"
chmod 600 "$ETC_DIR/slurmdbd.conf.new"   # slurmdbd refuses a readable one
ctl_changed=0
dbd_changed=0
cmp -s "$ETC_DIR/slurm.conf.new" "$ETC_DIR/slurm.conf" || ctl_changed=1
cmp -s "$ETC_DIR/slurmdbd.conf.new" "$ETC_DIR/slurmdbd.conf" || dbd_changed=1

all_alive=1
for d in "${DAEMONS[@]}"; do daemon_alive "$d" || all_alive=0; done

print_env() {
    printf '# Source me to use the zenodo_hpc dev SLURM cluster\nexport SLURM_CONF=%q\n' \
        "$SLURM_CONF_FILE" > "$ENV_FILE"
    printf 'export SLURM_CONF=%q\n' "$SLURM_CONF_FILE"
}

if ((all_alive && !ctl_changed && !dbd_changed)) && ctld_ok && node_ready; then
    rm -f "$ETC_DIR"/*.new
    log "already up: $(sinfo -h -o '%P %a %D %T' | tr '\n' ' ')(state $STATE)"
    print_env
    exit 0
fi

# A knob changed while running: restart the daemons that read the changed
# file (jobs and accounting data survive; slurmctld keeps its state).
if ((ctl_changed)); then
    for d in slurmd slurmctld; do
        daemon_alive "$d" && log "slurm.conf changed; restarting $d"
        stop_daemon "$d"
    done
fi
if ((dbd_changed)); then
    daemon_alive slurmdbd && log "slurmdbd.conf changed; restarting slurmdbd"
    stop_daemon slurmdbd
fi
mv -f "$ETC_DIR/slurm.conf.new" "$ETC_DIR/slurm.conf"
mv -f "$ETC_DIR/slurmdbd.conf.new" "$ETC_DIR/slurmdbd.conf"

start_munged
start_mariadbd
start_slurmdbd        # must be up before slurmctld, or accounting is lost
register_accounting
start_slurmctld
start_slurmd
self_test

print_env
log "up in $((SECONDS - start_time))s: $(sinfo -V), partitions: $(sinfo -h -o '%P' | tr '\n' ' ')"
log "run 'source $ENV_FILE' to use it; 'bash $HERE/down.sh' to stop it"
