# shellcheck shell=bash disable=SC2034  # variables are used by up.sh/down.sh
# Shared by up.sh and down.sh (sourced, not executed).
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

ETC_DIR="$STATE/etc"            # slurm.conf, slurmdbd.conf
RUN_DIR="$STATE/run"            # PID files of every daemon we start
LOG_DIR="$STATE/log"            # one log per daemon
SPOOL_DIR="$STATE/spool"        # StateSaveLocation, SlurmdSpoolDir
MUNGE_DIR="$STATE/munge"        # our own munge key + seed
MUNGE_SOCKET_DIR="$MUNGE_DIR/run"   # must be mode 755 for munged
MUNGE_SOCKET="$MUNGE_SOCKET_DIR/munge.socket.2"
DB_DIR="$STATE/mariadb"         # mariadb data dir + socket
DB_SOCKET="$DB_DIR/mysqld.sock"

SLURM_CONF_FILE="$ETC_DIR/slurm.conf"
ENV_FILE="$STATE/env.sh"

# Order matters: this is the start order. down.sh stops in reverse order.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

log() { printf '[dev-cluster] %s\n' "$*" >&2; }

pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }

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
# is that daemon (a stale PID file after a reboot/crash may point at a PID that
# was reused by something else -- we must never signal that).
daemon_pid() {
    local name="$1" file pid
    file="$(pid_file "$name")"
    [[ -s "$file" ]] || return 1
    pid="$(tr -dc '0-9' < "$file")"
    [[ -n "$pid" ]] && pid_is "$pid" "$name" || return 1
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
        pid_is "$pid" "$name" || break
        sleep 0.1
    done
    if pid_is "$pid" "$name"; then
        log "$name (pid $pid) did not exit within ${timeout}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_is "$pid" "$name" || break
            sleep 0.1
        done
    fi
    rm -f "$(pid_file "$name")"
}

# Serialise up.sh/down.sh runs on the same state folder (e.g. two CI steps, or
# a test fixture racing a developer), so they never start daemons twice.
take_lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    if ! flock -n 9; then
        log "waiting for another up.sh/down.sh on $STATE to finish"
        flock -w 300 9 || { log "ERROR: could not lock $STATE/.lock within 300s"; exit 1; }
    fi
}
