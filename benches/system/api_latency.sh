#!/usr/bin/env bash
# API request to first INVITE on the wire, and the API's sustained
# requests/s (issue 5, SPEC N-6: p99 < 5 ms at 200 requests/s).
#
#   benches/system/api_latency.sh [RUNS] [SECONDS] [RATE]     (5 20 200)
#
# Each run starts a fresh `kolokol run --config benches/system/apibench.toml`
# under `taskset -c 0` (API on 127.0.0.1:8543, SIP on 5360, its trunk the
# apiload sink on 5390), waits for /readyz, and runs apiload (it pins itself
# to CPU 1):
#   1. paced RATE requests/s for SECONDS, one keep-alive connection per worker;
#   2. the same with a new TLS connection per request (CLOSE=0 skips it);
#   3. --max: closed loop, one step of MAX_SECONDS per concurrency in
#      MAX_WORKERS (default 1,4,16,64 and SECONDS), the sustained requests/s;
# then stops kolokol by its PID (SIGTERM: drain, exit). Raw JSON goes to
# benches/results/api-latency-<stamp>-run<i>-{paced,close,max}.json and the
# medians over the runs to benches/results/api-latency-<stamp>.json.
# Run it on a quiet host: anything else on CPU 0 or 1 is measured too.
set -euo pipefail
runs=${1:-5}
secs=${2:-20}
rate=${3:-200}
max_workers=${MAX_WORKERS:-1,4,16,64}
max_secs=${MAX_SECONDS:-$secs}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=${CARGO_TARGET_DIR:-$root/target}/release
cfg=benches/system/apibench.toml
ca=config/tls/test-ca.crt
api=https://127.0.0.1:8543

if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release --bin kolokol --bin apiload
fi
for p in 8543 5360 5390 2623; do
    if ss -Hlnut "( sport = :$p )" | grep -q .; then
        echo "api_latency: port $p is in use; stop what holds it first" >&2
        exit 1
    fi
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
res=benches/results/api-latency-$stamp
log=$(mktemp)
kp=
stop_kolokol() {
    [ -n "$kp" ] || return 0
    kill -TERM "$kp" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$kp" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$kp" 2>/dev/null; then
        echo "api_latency: kolokol $kp did not exit on SIGTERM; SIGKILL" >&2
        kill -KILL "$kp" 2>/dev/null || true
    fi
    wait "$kp" 2>/dev/null || true
    kp=
}
trap 'stop_kolokol; rm -f "$log"' EXIT

start_kolokol() {
    taskset -c 0 "$bin/kolokol" run --config "$cfg" >"$log" 2>&1 &
    kp=$!
    for _ in $(seq 100); do
        if curl -sf --cacert "$ca" "$api/readyz" >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$kp" 2>/dev/null || break
        sleep 0.1
    done
    echo "api_latency: kolokol did not become ready:" >&2
    cat "$log" >&2
    exit 1
}

apiload() {
    # Exit status 3 (requests lost) is a result, reported in the JSON.
    "$bin/apiload" --cpu 1 --server-pid "$kp" --quiet "$@" || [ $? = 3 ]
}

for i in $(seq 1 "$runs"); do
    echo "=== run $i/$runs"
    start_kolokol
    apiload --rate "$rate" --duration-s "$secs" --json "$res-run$i-paced.json"
    if [ "${CLOSE:-1}" != 0 ]; then
        apiload --rate "$rate" --duration-s "$secs" --connection close \
            --json "$res-run$i-close.json"
    fi
    apiload --max --workers "$max_workers" --duration-s "$max_secs" \
        --json "$res-run$i-max.json"
    stop_kolokol
done

python3 - "$res" "$runs" "$rate" "$secs" <<'PY'
import glob, json, statistics, sys
res, runs, rate, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
med = lambda xs: statistics.median(xs) if xs else None
summary = {"runs": runs, "rate": rate, "seconds": secs, "paced": {}, "max": {}}
def fmt(x, f="{:.3f}"):
    return "-" if x is None else f.format(x)
print(f"\nmedians over {runs} runs ({rate:g} requests/s for {secs:g} s; ms):")
print(f"{'':34} {'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8} {'max':>8}")
for kind in ("paced", "close"):
    files = sorted(glob.glob(f"{res}-run*-{kind}.json"))
    phases = [json.load(open(f))["phases"][0] for f in files]
    if not phases:
        continue
    out = {}
    for key, label in (("api_to_invite_ms", "API -> INVITE"), ("request_ms", "request (due -> response)")):
        row = {q: med([p[key][q] for p in phases if q in p[key]]) for q in ("p50", "p90", "p99", "p999", "max")}
        out[key] = row
        print(f"{kind + ' ' + label:34} " + " ".join(f"{fmt(row[q]):>8}" for q in ("p50", "p90", "p99", "p999", "max")))
    for k in ("achieved_rps", "ok_fraction", "missing_invites", "server_mean_to_head_ms",
              "server_cpu_us_per_request", "server_cpu_us_per_request_above_idle",
              "apiload_cpu_us_per_request"):
        out[k] = med([p[k] for p in phases if p.get(k) is not None])
    out["errors"] = [p["errors"] for p in phases]
    out["generator_lag_p99_ms"] = med([p["generator_lag_ms"]["p99"] for p in phases if "p99" in p["generator_lag_ms"]])
    print(f"{'':34} achieved {fmt(out['achieved_rps'], '{:.1f}')} req/s, 2xx {fmt(out['ok_fraction'], '{:.4f}')}, "
          f"missing INVITEs {fmt(out['missing_invites'], '{:.0f}')}, server mean {fmt(out['server_mean_to_head_ms'])} ms, "
          f"gateway CPU {fmt(out['server_cpu_us_per_request_above_idle'], '{:.0f}')} us/req above idle, "
          f"apiload lag p99 {fmt(out['generator_lag_p99_ms'])} ms")
    summary["paced" if kind == "paced" else "close"] = out
maxes = [json.load(open(f)) for f in sorted(glob.glob(f"{res}-run*-max.json"))]
rates = [m["sustained_rps"] for m in maxes if m.get("sustained_rps") is not None]
summary["max"] = {
    "sustained_rps_each": [m.get("sustained_rps") for m in maxes],
    "sustained_workers_each": [m.get("sustained_workers") for m in maxes],
    "sustained_rps_median": med(rates),
    "steps": [[{k: p[k] for k in ("workers", "ok_rps", "ok_fraction", "missing_invites")}
               | {"request_p99_ms": p["request_ms"].get("p99"), "api_to_invite_p99_ms": p["api_to_invite_ms"].get("p99")}
               for p in m["phases"]] for m in maxes],
}
print(f"sustained (closed loop, >= 99.9 % 2xx with INVITEs): median {fmt(med(rates), '{:.0f}')} req/s; "
      f"each run {[round(r) if r else None for r in summary['max']['sustained_rps_each']]} "
      f"at workers {summary['max']['sustained_workers_each']}")
json.dump(summary, open(f"{res}.json", "w"), indent=2)
print(f"raw: {res}-run*.json, medians: {res}.json")
PY
