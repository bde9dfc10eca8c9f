#!/usr/bin/env bash
# Relayed packets per second of relay CPU on a veth topology, for every data
# path and for rtpengine's userspace relay, in one run (issue 7).
#
#   benches/system/xdp_veth.sh [RUNS] [SECONDS] [CALLS] [MODES]
#
#   RUNS     rounds; every round runs each mode once, order rotating (3)
#   SECONDS  measured seconds per run, after a 3 s warm-up (15)
#   CALLS    concurrent paced calls, 50 packets/s per leg per direction,
#            i.e. 100 packets/s into the relay per call (600)
#   MODES    comma list (rtpengine,sockets,xdp,afxdp-srtp,rtpengine-srtp):
#     rtpengine       Debian rtpengine, table = -1 (userspace), one thread
#     sockets         Kolokol, datapath = "sockets"
#     xdp             Kolokol, datapath = "xdp" on both gateway veths
#     afxdp-srtp      Kolokol, datapath = "xdp", leg A SRTP (AES_CM_128_HMAC_SHA1_80)
#     rtpengine-srtp  rtpengine with leg A SRTP: the anchor of afxdp-srtp
#   Environment: BIN (default target/release), OUT (default benches/results),
#   XDPCOST_REPEAT (2000000), XDPCOST_ROUNDS (5), SKIP_XDPCOST=1, HOLD=S
#   (build the topology, print its names, keep it S seconds, measure nothing).
#
# Output: one JSON per run ($OUT/xdp-veth-STAMP-MODE-rN.json: loadgen's report,
# the NAPI kthreads counted, the gw veths' XDP counters), xdpcost JSON, and a
# summary ($OUT/xdp-veth-STAMP.json) with medians, ranges and the ratios:
# sockets and xdp against rtpengine, afxdp-srtp against rtpengine-srtp.
#
# Topology (namespaces named after this script's pid, removed on exit):
#
#   gen [xbg0 10.80.1.2] <-> [xbga 10.80.1.1] gw [xbgb 10.80.2.1] <-> [xbs0 10.80.2.2] sink
#   leg A addresses 10.81.0.0/16 (local in gen)     relay media address 10.80.0.1/32 on gw's lo
#   leg B addresses 10.82.0.0/16 (local in sink)    ng control 127.0.0.1 in gw
#
# The relay runs in gw pinned to CPU 0; loadgen (CPU 1, SCHED_FIFO 10) opens
# leg A's socket in gen, leg B's in sink and the ng socket in gw. Every veth
# has NAPI on (GRO) and threaded NAPI; the gw side's NAPI kthreads are pinned
# to CPU 0 with the relay, the gen/sink side's to CPU 1 with the generator.
# The gen/sink veths carry an XDP_PASS program (kolokol_pass, needed to
# receive XDP-redirected frames) and send with TX checksum offload off, in
# every mode, so the topology is the same for all.
#
# Relay CPU = the relay process's schedstat + the gw veths' NAPI kthreads'
# schedstat over loadgen's measured window (loadgen --relay-extra-pids): the
# kernel receive path of a socket relay runs in those kthreads, and so does
# the XDP program; the generator's own receive path runs in gen/sink's.
#
# A BPF_PROG_TEST_RUN step (xdpcost) measures the XDP program per packet, with
# and without live frames, before the modes.
#
# Needs root, iproute2, ethtool, rtpengine (Debian rtpengine-daemon), python3
# and a release build with the XDP program (clang + libbpf-dev at build time):
#   cargo build --release --bins
set -euo pipefail

runs=${1:-3}
secs=${2:-15}
calls=${3:-600}
modes=${4:-rtpengine,sockets,xdp,afxdp-srtp,rtpengine-srtp}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${BIN:-$root/target/release}
out=${OUT:-$root/benches/results}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
tag=xdp-veth-$stamp
RELAY_CPU=0
GEN_CPU=1
GEN=kxbgen$$
GW=kxbgw$$
SINK=kxbsink$$
KNG=127.0.0.1:2299
RNG=127.0.0.1:2223
SRTP=AES_CM_128_HMAC_SHA1_80

die() {
    echo "xdp_veth: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "needs root"
for t in ip ethtool python3 taskset; do
    command -v "$t" >/dev/null || die "$t missing"
done
for b in kolokol loadgen xdpcost; do
    [ -x "$bin/$b" ] || die "$bin/$b missing: cargo build --release --bins"
done
case ",$modes," in *,rtpengine*) command -v rtpengine >/dev/null || die "rtpengine missing" ;; esac
obj=$(ls -t "$bin"/build/kolokol-*/out/relay.bpf.o 2>/dev/null | head -1 || true)
[ -n "$obj" ] || die "no relay.bpf.o under $bin/build: the build had no clang/libbpf-dev"
mkdir -p "$out"

dir=$(mktemp -d)
relay_pid=
cleanup() {
    set +e
    if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
        kill "$relay_pid"
        wait "$relay_pid" 2>/dev/null
    fi
    for ns in "$GEN" "$GW" "$SINK"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Not for background jobs: $! would be this function's subshell.
nse() { ip netns exec "$@"; }

# ------------------------------------------------------------------ topology
topology() {
    for ns in "$GEN" "$GW" "$SINK"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        nse "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    done
    # Created inside the namespaces: nothing appears in the host's.
    ip -n "$GEN" link add xbg0 type veth peer name xbga netns "$GW"
    ip -n "$GW" link add xbgb type veth peer name xbs0 netns "$SINK"
    ip -n "$GEN" addr add 10.80.1.2/24 dev xbg0
    ip -n "$GW" addr add 10.80.1.1/24 dev xbga
    ip -n "$GW" addr add 10.80.2.1/24 dev xbgb
    ip -n "$SINK" addr add 10.80.2.2/24 dev xbs0
    ip -n "$GW" addr add 10.80.0.1/32 dev lo
    for x in "$GEN xbg0" "$GW xbga" "$GW xbgb" "$SINK xbs0"; do
        set -- $x
        ip -n "$1" link set "$2" up
    done
    # Every leg address of a side is local there (AnyIP), so loadgen sends
    # from, and receives at, exactly the address in its SDP.
    ip -n "$GEN" route add local 10.81.0.0/16 dev lo
    ip -n "$SINK" route add local 10.82.0.0/16 dev lo
    ip -n "$GEN" route add default via 10.80.1.1
    ip -n "$SINK" route add default via 10.80.2.1
    ip -n "$GW" route add 10.81.0.0/16 via 10.80.1.2 dev xbga
    ip -n "$GW" route add 10.82.0.0/16 via 10.80.2.2 dev xbgb
    # The XDP program's FIB lookup (bpf_fib_lookup) refuses to answer for
    # an ingress interface without forwarding; packets to the relay's own
    # address are delivered locally either way.
    nse "$GW" sysctl -qw net.ipv4.conf.all.forwarding=1
    # veth hands its peer partial checksums: the generator's side sends
    # complete ones, which an XDP rewrite can update.
    nse "$GEN" ethtool -K xbg0 tx off >/dev/null
    nse "$SINK" ethtool -K xbs0 tx off >/dev/null
    # XDP_PASS on the receiving peers (native XDP redirect into a veth
    # needs a program, or NAPI, on the peer).
    ip -n "$GEN" link set dev xbg0 xdpdrv object "$obj" program kolokol_pass ||
        die "attaching kolokol_pass from $obj"
    ip -n "$SINK" link set dev xbs0 xdpdrv object "$obj" program kolokol_pass
    # NAPI on every veth (GRO), then threaded NAPI.
    for x in "$GEN xbg0" "$GW xbga" "$GW xbgb" "$SINK xbs0"; do
        set -- $x
        nse "$1" ethtool -K "$2" gro on >/dev/null
        nse "$1" sh -c "echo 1 > /sys/class/net/$2/threaded" ||
            die "threaded NAPI refused on $2"
    done
    # Neighbours fixed before any measurement (the XDP program's FIB
    # lookup passes packets to the stack while a neighbour is unresolved).
    ip -n "$GW" neigh replace 10.80.1.2 lladdr "$(mac "$GEN" xbg0)" dev xbga nud permanent
    ip -n "$GW" neigh replace 10.80.2.2 lladdr "$(mac "$SINK" xbs0)" dev xbgb nud permanent
    ip -n "$GEN" neigh replace 10.80.1.1 lladdr "$(mac "$GW" xbga)" dev xbg0 nud permanent
    ip -n "$SINK" neigh replace 10.80.2.1 lladdr "$(mac "$GW" xbgb)" dev xbs0 nud permanent
}

mac() { ip -n "$1" -o link show "$2" | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2; }

# PIDs of a device's NAPI kthreads ("napi/DEV-ID").
napi_pids() {
    ps -e -o pid=,comm= | awk -v p="napi/$1-" 'index($2, p) == 1 { print $1 }'
}

# Find and pin the NAPI kthreads (again before every run: a kthread is
# recreated when a device's NAPI is). Prints the gw side's PIDs, comma
# separated.
pin_napi() {
    local gwp="" p d
    for d in xbga xbgb; do
        for p in $(napi_pids $d); do
            taskset -pc "$RELAY_CPU" "$p" >/dev/null
            gwp="$gwp${gwp:+,}$p"
        done
    done
    for d in xbg0 xbs0; do
        for p in $(napi_pids $d); do
            taskset -pc "$GEN_CPU" "$p" >/dev/null
        done
    done
    [ -n "$gwp" ] || die "no NAPI kthreads for xbga/xbgb (threaded NAPI not on?)"
    echo "$gwp"
}

# -------------------------------------------------------------------- relays
cat >"$dir/rtpengine.conf" <<CFG
[rtpengine]
table = -1
interface = 10.80.0.1
listen-ng = $RNG
port-min = 30000
port-max = 39999
num-threads = 1
delete-delay = 0
endpoint-learning = off
foreground = true
log-stderr = true
CFG

kolokol_cfg() { # $1 = sockets | xdp | afxdp
    local dp=$1
    [ "$dp" = afxdp ] && dp=xdp
    cat <<CFG
[shards]
count = 1
cpus = [$RELAY_CPU]
[media]
address = "10.80.0.1"
port_min = 30000
port_max = 39999
timeout_s = 600
datapath = "$dp"
CFG
    [ "$dp" = xdp ] && echo 'xdp_interface = ["xbga", "xbgb"]'
    # AF_XDP legs (no socket per leg; every leg relayed from the shard's
    # XSKs), where this build has them.
    [ "$1" = afxdp ] && echo 'xsk_legs = true'
    cat <<CFG
[ng]
listen = "$KNG"
[sip]
enabled = false
CFG
}
kolokol_cfg sockets >"$dir/k-sockets.toml"
kolokol_cfg xdp >"$dir/k-xdp.toml"
# Builds before the AF_XDP path have no `xsk_legs` (and refuse unknown
# keys): afxdp-srtp then runs with datapath = "xdp" alone, i.e. on sockets,
# and says so.
if grep -qa xsk_legs "$bin/kolokol"; then
    kolokol_cfg afxdp >"$dir/k-afxdp.toml"
    afxdp=true
else
    cp "$dir/k-xdp.toml" "$dir/k-afxdp.toml"
    afxdp=false
    echo "xdp_veth: this kolokol has no AF_XDP legs (xsk_legs): afxdp-srtp runs on sockets" >&2
fi

start_relay() { # $1 = mode; sets relay_pid and ng
    case $1 in
    rtpengine | rtpengine-srtp)
        ip netns exec "$GW" taskset -c "$RELAY_CPU" rtpengine --config-file="$dir/rtpengine.conf" \
            >"$dir/relay-$1.log" 2>&1 &
        ng=$RNG
        ;;
    sockets)
        ip netns exec "$GW" taskset -c "$RELAY_CPU" "$bin/kolokol" run --config "$dir/k-sockets.toml" \
            >"$dir/relay-$1.log" 2>&1 &
        ng=$KNG
        ;;
    xdp)
        ip netns exec "$GW" taskset -c "$RELAY_CPU" "$bin/kolokol" run --config "$dir/k-xdp.toml" \
            >"$dir/relay-$1.log" 2>&1 &
        ng=$KNG
        ;;
    afxdp-srtp)
        ip netns exec "$GW" taskset -c "$RELAY_CPU" "$bin/kolokol" run --config "$dir/k-afxdp.toml" \
            >"$dir/relay-$1.log" 2>&1 &
        ng=$KNG
        ;;
    *) die "unknown mode $1" ;;
    esac
    # ip netns exec and taskset exec: $! is the relay itself.
    relay_pid=$!
    sleep 1.5
    kill -0 "$relay_pid" 2>/dev/null || {
        cat "$dir/relay-$1.log" >&2
        die "$1 exited at start"
    }
}

stop_relay() {
    kill "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
    relay_pid=
    sleep 1
}

# Per-queue XDP counters of the gw veths (ethtool -S), as JSON.
xdp_stats() {
    local d
    for d in xbga xbgb; do
        nse "$GW" ethtool -S $d 2>/dev/null | sed -n "s/^ *\([a-z0-9_]*xdp[a-z0-9_]*\): \([0-9]*\)$/$d \1 \2/p"
    done
}

# CPU 0's busy and total jiffies (busy: user, nice, system, irq, softirq,
# steal; iowait counts as idle: a task waiting in io_uring shows as iowait).
cpu0() { awk -v c="cpu$RELAY_CPU" '$1 == c { print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat; }

run_mode() { # $1 = mode, $2 = round
    local mode=$1 r=$2 extra=() napi js
    case $mode in *-srtp) extra=(--srtp "$SRTP") ;; esac
    start_relay "$mode"
    napi=$(pin_napi)
    js="$out/$tag-$mode-r$r.json"
    xdp_stats >"$dir/x0"
    read -r b0 t0 < <(cpu0)
    local load0
    load0=$(cut -d' ' -f1 /proc/loadavg)
    if ! "$bin/loadgen" --ng "$ng" --ng-netns "$GW" --netns-a "$GEN" --netns-b "$SINK" \
        --src-net 10.81 --src-net-b 10.82 --port 16000 \
        --calls "$calls" --pps 50 --duration-s "$secs" --warmup-s 3 \
        --cpu "$GEN_CPU" --rt-prio 10 --relay-pid "$relay_pid" --relay-extra-pids "$napi" \
        --json "$dir/lg.json" --quiet "${extra[@]}" >"$dir/lg.txt" 2>&1; then
        cat "$dir/lg.txt" >&2
        echo "xdp_veth: loadgen failed for $mode round $r (relay log: $(tail -3 "$dir/relay-$mode.log"))" >&2
        stop_relay
        return 0
    fi
    read -r b1 t1 < <(cpu0)
    xdp_stats >"$dir/x1"
    stop_relay
    python3 - "$dir/lg.json" "$js" "$mode" "$r" "$napi" "$dir/x0" "$dir/x1" \
        "$b0" "$t0" "$b1" "$t1" "$load0" "$(cut -d' ' -f1 /proc/loadavg)" "$afxdp" <<'PY'
import json, sys
lg, js, mode, r, napi, x0, x1, b0, t0, b1, t1, l0, l1, afxdp = sys.argv[1:]
rep = json.load(open(lg))
def stats(p):
    d = {}
    for line in open(p):
        dev, k, v = line.split()
        d[f"{dev}.{k}"] = int(v)
    return d
s0, s1 = stats(x0), stats(x1)
xdp = {k: s1[k] - s0.get(k, 0) for k in s1 if s1[k] - s0.get(k, 0)}
out = {
    "mode": mode, "round": int(r), "napi_kthreads_gw": [int(p) for p in napi.split(",")],
    "cpu0_busy_pct_whole_run": round((int(b1) - int(b0)) / max(int(t1) - int(t0), 1) * 100, 1),
    "loadavg_1m": [float(l0), float(l1)],
    "afxdp_legs": mode == "afxdp-srtp" and afxdp == "true",
    "veth_xdp_counters_delta": xdp,
    "loadgen": rep,
}
json.dump(out, open(js, "w"), indent=1)
rl = rep.get("relay") or {}
fwd = sum(v for k, v in xdp.items() if k.endswith("_xdp_redirect") or k.endswith("_xdp_tx"))
out["xdp_forwarded"] = fwd
json.dump(out, open(js, "w"), indent=1)
print(f"{mode:15s} round {r}: {rl.get('relayed_pps_per_core', 0):>9.0f} relayed pkt/s per core "
      f"(relay CPU {rl.get('cpu_pct')}% = process {rl.get('process_cpu_pct')}% + NAPI "
      f"{rl.get('extra_cpu_pct')}%), relayed {rep['relayed_pps']:.0f} pkt/s, loss "
      f"{rep['loss_pct']}%, gen kept schedule {rep['generator']['kept_schedule']}, "
      f"srtp errors {rep['srtp_errors']}, XDP-forwarded {fwd}")
PY
}

# ------------------------------------------------------------------------ run
echo "xdp_veth: $tag: $runs rounds x [$modes], $calls calls, $secs s; host: $(nproc) CPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
topology
pin_napi >/dev/null
if [ -n "${HOLD:-}" ]; then # debugging: keep the topology up for HOLD seconds
    echo "xdp_veth: holding $GEN $GW $SINK for $HOLD s (config in $dir)"
    sleep "$HOLD"
    exit 0
fi

# BPF_PROG_TEST_RUN of the relay program as if frames arrived on xbga,
# forwarded out of xbgb: non-live and live frames; entry egress and FIB.
# $1 = pass | drop: what the receiving peer xbs0 runs (with XDP_PASS every
# frame it takes goes up sink's stack, so its 256-frame ring is mostly full
# and the veth refuses most live frames; with XDP_DROP it keeps up better).
xdpcost_step() {
    local peer=$1 eg js x0 x1 how verify=()
    [ "$peer" = pass ] && verify=(--verify-netns "$SINK")
    for eg in entry fib; do
        if [ $eg = entry ]; then how=(--peer-mac "$(mac "$SINK" xbs0)"); else how=(--fib); fi
        js="$out/$tag-xdpcost-$eg-peer$peer.json"
        x0=$(nse "$GW" ethtool -S xbgb | awk '$1 ~ /^tx_queue_0_xdp_xmit/ { printf "%s ", $2 }')
        if nse "$GW" taskset -c "$RELAY_CPU" "$bin/xdpcost" --in xbga --out xbgb "${how[@]}" \
            --src 10.81.0.1:16000 --dst 10.82.0.1:16000 "${verify[@]}" \
            --repeat "${XDPCOST_REPEAT:-2000000}" --rounds "${XDPCOST_ROUNDS:-5}" --json "$js"; then
            x1=$(nse "$GW" ethtool -S xbgb | awk '$1 ~ /^tx_queue_0_xdp_xmit/ { printf "%s ", $2 }')
            python3 - "$js" "$peer" $x0 $x1 <<'PY'
import json, sys
p, peer, a0, e0, a1, e1 = sys.argv[1:]
j = json.load(open(p))
j["peer_program"] = peer
j["veth_xdp_xmit"] = int(a1) - int(a0)
j["veth_xdp_xmit_errors"] = int(e1) - int(e0)
json.dump(j, open(p, "w"), indent=1)
print(f"xdpcost: the veth took {j['veth_xdp_xmit']} frames into its peer's ring and refused "
      f"{j['veth_xdp_xmit_errors']} (ring full)")
PY
        else
            echo "xdp_veth: xdpcost ($eg, peer $peer) failed" >&2
        fi
    done
}

if [ -z "${SKIP_XDPCOST:-}" ]; then
    xdpcost_step pass
    cat >"$dir/drop.c" <<'C'
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp")
int kolokol_drop(struct xdp_md *ctx) { return XDP_DROP; }
char LICENSE[] SEC("license") = "GPL";
C
    if clang -O2 -target bpf -I "/usr/include/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)" \
        -c "$dir/drop.c" -o "$dir/drop.o" 2>"$dir/drop.err"; then
        ip -force -n "$SINK" link set dev xbs0 xdpdrv object "$dir/drop.o" sec xdp
        xdpcost_step drop
        ip -force -n "$SINK" link set dev xbs0 xdpdrv object "$obj" program kolokol_pass
    else
        echo "xdp_veth: no XDP_DROP variant (clang: $(head -1 "$dir/drop.err"))" >&2
    fi
fi

IFS=, read -r -a mlist <<<"$modes"
n=${#mlist[@]}
for r in $(seq 1 "$runs"); do
    for k in $(seq 0 $((n - 1))); do
        run_mode "${mlist[$(((k + r - 1) % n))]}" "$r"
    done
done

python3 - "$out" "$tag" "$modes" "$calls" "$secs" "$runs" <<'PY'
import glob, json, os, platform, statistics, sys
out, tag, modes, calls, secs, runs = sys.argv[1:]
res = {}
for p in sorted(glob.glob(os.path.join(out, f"{tag}-*-r[0-9]*.json"))):
    j = json.load(open(p))
    res.setdefault(j["mode"], []).append(j)
def med(xs):
    xs = [x for x in xs if x is not None]
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)} if xs else None
summ = {}
for m, rs in res.items():
    lg = [r["loadgen"] for r in rs]
    summ[m] = {
        "pps_per_core": med([(x.get("relay") or {}).get("relayed_pps_per_core") for x in lg]),
        "relay_cpu_pct": med([(x.get("relay") or {}).get("cpu_pct") for x in lg]),
        "process_cpu_pct": med([(x.get("relay") or {}).get("process_cpu_pct") for x in lg]),
        "napi_cpu_pct": med([(x.get("relay") or {}).get("extra_cpu_pct") for x in lg]),
        "relayed_pps": med([x["relayed_pps"] for x in lg]),
        "loss_pct": med([x["loss_pct"] for x in lg]),
        "gen_kept_schedule": [x["generator"]["kept_schedule"] for x in lg],
        "srtp_errors": sum(x.get("srtp_errors", 0) for x in lg),
        "xdp_forwarded": [r["xdp_forwarded"] for r in rs],
    }
anchor = {"sockets": "rtpengine", "xdp": "rtpengine", "afxdp-srtp": "rtpengine-srtp"}
for m, a in anchor.items():
    if m in summ and a in summ and summ[m]["pps_per_core"] and summ[a]["pps_per_core"]:
        summ[m]["vs_" + a] = round(summ[m]["pps_per_core"]["median"] / summ[a]["pps_per_core"]["median"], 2)
cost = {}
for peer in ("pass", "drop"):
    for eg in ("entry", "fib"):
        p = os.path.join(out, f"{tag}-xdpcost-{eg}-peer{peer}.json")
        if os.path.exists(p):
            cost[f"{eg} egress, peer XDP_{peer.upper()}"] = json.load(open(p))
doc = {"tag": tag, "modes": modes.split(","), "calls": int(calls), "seconds": float(secs),
       "rounds": int(runs), "kernel": platform.release(), "summary": summ,
       "xdpcost": {k: {"nonlive_ns": v["nonlive_ns_median"], "live_ns": v["live_ns_median"],
                       "nonlive_range": v["nonlive_ns_range"], "live_range": v["live_ns_range"],
                       "verify": [v["verify_sent"], v["verify_received"]],
                       "veth_took": v.get("veth_xdp_xmit"), "veth_refused": v.get("veth_xdp_xmit_errors")}
                   for k, v in cost.items()}}
json.dump(doc, open(os.path.join(out, f"{tag}.json"), "w"), indent=1)
print(f"\n{tag}: {calls} calls x 100 pkt/s in, {secs} s, median of {runs} [range]")
for m in modes.split(","):
    s = summ.get(m)
    if not s or not s["pps_per_core"]:
        print(f"  {m:15s} no result"); continue
    p, c = s["pps_per_core"], s["relay_cpu_pct"]
    ratio = "".join(f"  {k.replace('_', ' ')} {v}x" for k, v in s.items() if k.startswith("vs_"))
    print(f"  {m:15s} {p['median']:>9.0f} pkt/s per core [{p['min']:.0f}-{p['max']:.0f}]  relay CPU {c['median']}% "
          f"(process {s['process_cpu_pct']['median']}%, NAPI {s['napi_cpu_pct']['median']}%)  loss {s['loss_pct']['median']}%"
          f"  xdp fwd {s['xdp_forwarded']}{ratio}")
for k, v in doc["xdpcost"].items():
    print(f"  xdpcost ({k}): non-live {v['nonlive_ns']:.1f} ns/pkt {v['nonlive_range']}, live frames "
          f"{v['live_ns']:.1f} ns/pkt {v['live_range']}, verify {v['verify']}, veth took {v['veth_took']} refused {v['veth_refused']}")
print(f"summary: {os.path.join(out, tag + '.json')}")
PY
