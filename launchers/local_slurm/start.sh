#!/usr/bin/env bash
# Start a single-node SLURM cluster (munged, slurmctld, slurmd) without systemd, all state
# under $KIT_SLURM_DIR (default /tmp/kit-slurm). Prints the SLURM_CONF to export.
# Usage: eval "$(launchers/local_slurm/start.sh)"   # exports SLURM_CONF for sbatch/squeue
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${KIT_SLURM_DIR:-/tmp/kit-slurm}"
PORT="${KIT_SLURM_PORT:-16817}"
HOST="$(hostname -s)"
CPUS="$(nproc)"
# slurmd refuses to start when the node claims more memory than it has: use what slurmd -C sees
MEM="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
mkdir -p "$DIR"/{munge,state,spool,log}
chmod 700 "$DIR/munge"

sed -e "s|@DIR@|$DIR|g" -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM@|$MEM|g" \
    -e "s|@PORT@|$PORT|g" -e "s|@DPORT@|$((PORT + 1))|g" "$HERE/slurm.conf.in" > "$DIR/slurm.conf"
export SLURM_CONF="$DIR/slurm.conf"

# munge: its own key and socket, so a system munged (if any) is left alone
[ -f "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null 2>&1 \
    || dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$DIR/munge/munge.key"
munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed"

slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"

# Ready when the node is idle (slurmd registered with slurmctld)
for _ in $(seq 1 60); do
    state="$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)"
    if [ "$state" = "idle" ]; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
echo "local SLURM did not come up (node state: ${state:-none}); see $DIR/log/" >&2
exit 1
