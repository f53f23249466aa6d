#!/bin/bash
# One member of the payment service behind a VRRP VIP, as the vipcast lab
# runs it: nginx (this directory's nginx.conf) in front of `vipcast
# payment-backend` on 127.0.0.1:8080.
#
#   webctl watch   every 100 ms: GET /health through nginx; the `health` file
#                  (keepalived track_file, weight 0: non-zero is FAULT);
#                  nginx started again 2 s after it died (as a service
#                  manager would)
set -u
here=$(cd "$(dirname "$0")" && pwd)

put() { printf '%s\n' "$2" > "$here/$1.tmp" && mv -f "$here/$1.tmp" "$here/$1"; }
log() { printf '%s webctl[%s]: %s\n' "$(date +%s%3N)" "$$" "$*" >> "$here/webctl.log"; }
nginx_running() {
    local pid state
    pid=$(cat "$here/nginx.pid" 2>/dev/null) || return 1
    state=$(sed -n 's/^[0-9]* ([^)]*) \(.\).*/\1/p' "/proc/$pid/stat" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ]
}
start_nginx() {
    setsid nginx -c "$here/nginx.conf" </dev/null >>"$here/nginx.out" 2>&1 &
    log "nginx started"
}

watch() {
    local dead_since=""
    nginx_running || start_nginx
    while :; do
        local healthy=1
        curl -fsS -m 1 -o /dev/null http://127.0.0.1/health 2>/dev/null && healthy=0
        [ "$(cat "$here/health" 2>/dev/null)" = "$healthy" ] || { put health "$healthy"; log "health $healthy"; }
        if nginx_running; then
            dead_since=""
        elif [ -z "$dead_since" ]; then
            dead_since=$(date +%s%3N)
            log "nginx is not running"
        elif [ $(($(date +%s%3N) - dead_since)) -ge 2000 ]; then
            start_nginx
            dead_since=""
        fi
        sleep 0.1
    done
}

case "${1:-}" in
    watch) watch ;;
    *) echo "usage: webctl watch" >&2; exit 2 ;;
esac
