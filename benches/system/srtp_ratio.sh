#!/usr/bin/env bash
# SRTP relay efficiency as a fraction of plain-RTP efficiency, measured in
# adjacent pairs so that the shared host's drift cancels (issue 3).
#
#   benches/system/srtp_ratio.sh [PAIRS] [SECONDS]
#
# Each pair runs Kolokol (one shard, CPU 0) flat out with 100 calls from
# loadgen (CPU 1): once plain RTP, once with leg A AES_CM_128_HMAC_SHA1_80
# (SDES) and leg B plain, alternating which goes first. Prints relayed
# packets/s per core of relay CPU for both, the ratio per pair, and the
# medians. Build first: cargo build --release.
set -euo pipefail
pairs=${1:-6}
secs=${2:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/target/release
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/k.toml" <<CFG
[shards]
count = 1
cpus = [0]
[media]
address = "127.0.0.1"
port_min = 30000
port_max = 39999
timeout_s = 600
[ng]
listen = "127.0.0.1:2299"
[sip]
enabled = false
CFG

run() {
    "$bin/kolokol" run --config "$dir/k.toml" >"$dir/relay.log" 2>&1 &
    local kp=$!
    sleep 0.5
    "$bin/loadgen" --calls 100 --duration-s "$secs" --warmup-s 2 --cpu 1 --rt-prio 10 \
        --relay-pid "$kp" --json "$dir/lg.json" --quiet --ng 127.0.0.1:2299 --flat "$@" 2>&1 |
        grep -oE '[0-9]+ relayed pkt/s per core' | cut -d' ' -f1
    kill "$kp"
    wait "$kp" 2>/dev/null || true
}

srtp=(--srtp AES_CM_128_HMAC_SHA1_80)
: >"$dir/pairs"
for i in $(seq 1 "$pairs"); do
    if [ $((i % 2)) = 1 ]; then
        p=$(run); s=$(run "${srtp[@]}")
    else
        s=$(run "${srtp[@]}"); p=$(run)
    fi
    echo "$i $p $s" | tee -a "$dir/pairs" | awk '{printf "pair %d: plain %d srtp %d ratio %.3f\n", $1, $2, $3, $3/$2}'
done
python3 - "$dir/pairs" <<'PY'
import statistics, sys
rows = [list(map(float, l.split()[1:])) for l in open(sys.argv[1]) if l.strip()]
p = statistics.median(r[0] for r in rows)
s = statistics.median(r[1] for r in rows)
q = statistics.median(r[1] / r[0] for r in rows)
print(f"median plain {p:.0f}  median srtp {s:.0f}  ratio of medians {s/p:.3f}  median of pair ratios {q:.3f}")
PY
