#!/bin/bash
# One member of a semi-synchronous MariaDB pair behind a VRRP VIP, as the
# vipcast lab runs it (written by `vipcast lab up` next to its my.cnf and
# db.env; run inside the member's network namespace).
#
#   dbctl start master|replica   start mariadbd in that role, wait until ready
#   dbctl notify T N STATE P     keepalived's notify: MASTER promotes,
#                                BACKUP (after MASTER) and FAULT fence
#   dbctl watch                  every 100 ms: health and role files for
#                                keepalived's track_file, semi-sync re-armed
#
# Roles (the `role` file, weight 50 in keepalived: priority 100 + 50 x role):
#   0  replica (read_only, semi-sync slave of the peer)
#   1  master with a semi-sync replica (lossless)
#   2  master promoted without its peer: outranks a frozen old master (1)
#      until the peer has rejoined as a replica; then 1 again
# Health (the `health` file, weight 0: non-zero puts keepalived in FAULT):
#   mariadbd does not answer, or the member is a replica that has not yet
#   caught up with its master since it (re)joined.
# Fencing: a member that leaves MASTER while writable is killed (-9) and
# started again as a replica with --init-rpl-role=SLAVE, which makes crash
# recovery drop the binlog transactions its replica never acknowledged.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/db.env"

sql() { mariadb --defaults-file="$here/my.cnf" -N -B -e "$1"; }
status() { sql "SHOW GLOBAL STATUS LIKE '$1'" 2>/dev/null | cut -f2; }
slave_status() { mariadb --defaults-file="$here/my.cnf" -e 'SHOW SLAVE STATUS\G' 2>/dev/null; }
field() { sed -n "s/^ *$2: //p" <<<"$1"; }
slave_field() { field "$(slave_status)" "$1"; }
alive() { timeout 2 mariadb-admin --defaults-file="$here/my.cnf" --connect-timeout=1 ping >/dev/null 2>&1; }
put() { printf '%s\n' "$2" > "$here/$1.tmp" && mv -f "$here/$1.tmp" "$here/$1"; }
# Lines start with the wall clock in ms since the epoch (drills read them).
log() { printf '%s dbctl[%s]: %s\n' "$(date +%s%3N)" "$$" "$*" >> "$here/dbctl.log"; }
# A process that has exited (a zombie not yet reaped by whoever adopted it
# counts as gone).
exists() {
    local state
    state=$(sed -n 's/^[0-9]* ([^)]*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ]
}
running_pid() {
    local pid
    pid=$(cat "$here/mariadbd.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && exists "$pid" && echo "$pid"
}

start() {
    local role=$1 extra=()
    if [ "$role" = replica ]; then
        extra=(--init-rpl-role=SLAVE --read-only=1 --rpl-semi-sync-slave-enabled=1 --skip-slave-start)
        put rejoining 1
        put role 0
    fi
    setsid mariadbd --defaults-file="$here/my.cnf" "${extra[@]}" </dev/null >>"$here/mariadbd.out" 2>&1 9>&- &
    for _ in $(seq 300); do alive && break; sleep 0.05; done
    alive || { log "mariadbd did not start"; return 1; }
    if [ "$role" = master ]; then
        sql "SET GLOBAL read_only=0; SET GLOBAL rpl_semi_sync_master_enabled=1" || return 1
        put rejoining 0
        put role 1
    else
        sql "SET GLOBAL rpl_semi_sync_master_enabled=0;
             CHANGE MASTER TO MASTER_HOST='$PEER', MASTER_PORT=3306, MASTER_USER='$REPL_USER',
               MASTER_PASSWORD='$DB_PASSWORD', MASTER_USE_GTID=current_pos,
               MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=0.5;
             START SLAVE" || return 1
    fi
    log "started as $role (pid $(running_pid))"
}

promote() {
    [ "$(sql 'SELECT @@global.read_only')" = 0 ] && return 0
    # Cut the stream from the old master first: a prohibit route and its
    # socket destroyed (ss -K), so nothing more arrives from a master that
    # comes back, and STOP SLAVE IO_THREAD returns at once (an IO thread
    # blocked on a silent master takes 2 s to stop).
    ip route replace prohibit "$PEER" 2>/dev/null
    ss -K -tn dst "$PEER" dport = 3306 >/dev/null 2>&1
    sql "SET GLOBAL rpl_semi_sync_slave_enabled=0; STOP SLAVE IO_THREAD"
    local stopped=$?
    ip route del prohibit "$PEER" 2>/dev/null
    [ "$stopped" = 0 ] || return 1
    # Everything the replica acknowledged is in its relay log: apply it all
    # before taking writes, up to the last transaction received
    # (MASTER_GTID_WAIT on Gtid_IO_Pos). That one may have arrived only in
    # part (the stream cut midway): never acknowledged, it is never applied.
    # It is taken to be so when the parallel applier is idle (the SQL
    # thread at the end of the relay log, every worker waiting for work)
    # and gtid_slave_pos has not moved, twice 100 ms apart. (The SQL
    # thread's state alone says nothing of the workers: relay log deleted
    # before they finish would lose acknowledged writes.)
    local io pos last="" idle=0 i
    io=$(slave_field Gtid_IO_Pos)
    for i in $(seq 600); do
        [ "$(sql "SELECT MASTER_GTID_WAIT('$io', 0.1)")" = 0 ] && break
        pos=$(sql 'SELECT @@global.gtid_slave_pos')
        if [ "$(sql "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'system user' AND
                ((COMMAND = 'Slave_SQL' AND STATE NOT LIKE 'Slave has read all relay log%') OR
                 (COMMAND = 'Slave_worker' AND STATE <> 'Waiting for work from SQL thread'))")" = 0 ] &&
            [ "$pos" = "$last" ]; then
            idle=$((idle + 1))
            [ "$idle" -ge 2 ] && { log "the last transaction ($io) arrived only in part: not applied"; break; }
        else
            idle=0
        fi
        last=$pos
    done
    local applied
    applied=$(sql 'SELECT @@global.gtid_slave_pos')
    sql "STOP SLAVE; RESET SLAVE ALL;
         SET GLOBAL rpl_semi_sync_master_enabled=0;
         SET GLOBAL read_only=0" || return 1
    put role 2
    put rejoining 0
    log "promoted after applying $applied; semi-sync disarmed until the peer rejoins"
}

fence() {
    local pid
    if pid=$(running_pid); then
        [ "$(sql 'SELECT @@global.read_only' 2>/dev/null)" = 1 ] && return 0
        kill -9 "$pid" 2>/dev/null
        while exists "$pid"; do sleep 0.01; done
        log "fenced: killed writable mariadbd $pid"
    fi
    start replica
}

notify() {
    local state=$3 last
    last=$(cat "$here/vrrp_state" 2>/dev/null || echo INIT)
    put vrrp_state "$state"
    log "keepalived: $last -> $state"
    case "$state" in
        MASTER) promote ;;
        FAULT) fence ;;
        BACKUP) [ "$last" = MASTER ] && fence ;;
    esac
    return 0
}

watch() {
    local unsynced=0
    while :; do
        local healthy=1
        if alive; then
            healthy=0
            if [ "$(cat "$here/rejoining" 2>/dev/null)" = 1 ]; then
                local st caught=0
                st=$(slave_status)
                [ "$(field "$st" Slave_IO_Running)" = Yes ] &&
                    [ "$(field "$st" Slave_SQL_Running)" = Yes ] &&
                    [ "$(field "$st" Seconds_Behind_Master)" = 0 ] && caught=1
                if [ "$caught" = 1 ] && [ "$(status Rpl_semi_sync_slave_status)" = ON ]; then
                    put rejoining 0
                    unsynced=0
                    log "caught up with the master: eligible again"
                else
                    healthy=1
                    # Semi-sync is agreed when the replica connects: one that
                    # connected while the new master had it disarmed (its
                    # promotion still under way) stays asynchronous on that
                    # connection. Caught up but still so after 1 s: connect
                    # again.
                    if [ "$caught" = 1 ]; then
                        unsynced=$((unsynced + 1))
                        if [ "$unsynced" -ge 10 ]; then
                            unsynced=0
                            sql "STOP SLAVE IO_THREAD; START SLAVE IO_THREAD" &&
                                log "caught up but not semi-synchronous: reconnected to the master"
                        fi
                    else
                        unsynced=0
                    fi
                fi
            fi
            if [ "$(cat "$here/role" 2>/dev/null)" = 2 ]; then
                if [ -n "$(sql 'SHOW SLAVE HOSTS' 2>/dev/null)" ]; then
                    [ "$(sql 'SELECT @@global.rpl_semi_sync_master_enabled')" = 1 ] ||
                        { sql "SET GLOBAL rpl_semi_sync_master_enabled=1"; log "semi-sync re-armed"; }
                    [ "$(status Rpl_semi_sync_master_status)" = ON ] && { put role 1; log "lossless again"; }
                fi
            fi
        fi
        [ "$(cat "$here/health" 2>/dev/null)" = "$healthy" ] || put health "$healthy"
        sleep 0.1
    done
}

case "${1:-}" in
    start) start "${2:?master or replica}" ;;
    notify) shift; exec 9>"$here/lock"; flock 9; notify "$@" ;;
    watch) watch ;;
    promote | fence) exec 9>"$here/lock"; flock 9; "$1" ;;
    *) echo "usage: dbctl start master|replica | notify TYPE NAME STATE PRIORITY | watch" >&2; exit 2 ;;
esac
