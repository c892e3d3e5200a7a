#!/usr/bin/env bash
# Stops the daemons scripts/slurm-up.sh started (and only those), by their pid files.
set -uo pipefail
state="${COMPRESS_SLURM_DIR:-/tmp/compress-slurm}"
[ -f "$state/started" ] || exit 0
while read -r pidfile; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do
        [ -r "/proc/$pid/stat" ] || break
        [ "$(awk '{print $3}' "/proc/$pid/stat")" = "Z" ] && break
        sleep 0.1
    done
done < "$state/started"
rm -f "$state/started"
