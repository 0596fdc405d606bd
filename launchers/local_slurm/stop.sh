#!/usr/bin/env bash
# Stop the cluster start.sh started: its slurmd, slurmctld and munged, by their pid files.
set -uo pipefail
DIR="${KIT_SLURM_DIR:-/tmp/kit-slurm}"
for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
done
exit 0
