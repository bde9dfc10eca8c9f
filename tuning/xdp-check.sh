#!/usr/bin/env bash
# Kolokol XDP readiness of one interface (tuning/XDP.md).
#
#   tuning/xdp-check.sh [--dry-run|--apply] IFACE
#
# Reports the driver, whether an XDP program is attached and in which mode,
# queue counts, ring sizes, MTU and the offloads that matter for XDP (LRO,
# hardware GRO, VLAN stripping, checksums). With --apply (root) it turns
# LRO and hardware GRO off and raises the RX/TX rings to the NIC's maximum;
# it never changes the MTU, VLANs or queue counts (irq-affinity.sh does
# queues). Idempotent: a second --apply changes nothing.

set -euo pipefail
readonly PROG=${0##*/}
mode=dry-run
iface=
for a in "$@"; do
    case $a in
        --dry-run) mode=dry-run ;;
        --apply) mode=apply ;;
        -h|--help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) echo "$PROG: unknown option $a" >&2; exit 2 ;;
        *) iface=$a ;;
    esac
done
[ -n "$iface" ] || { echo "$PROG: usage: $PROG [--dry-run|--apply] IFACE" >&2; exit 2; }
[ -e "/sys/class/net/$iface" ] || { echo "$PROG: no interface $iface" >&2; exit 2; }
command -v ethtool >/dev/null || { echo "$PROG: ethtool is needed (apt-get install ethtool)" >&2; exit 2; }
if [ "$mode" = apply ] && [ "$(id -u)" -ne 0 ]; then
    echo "$PROG: --apply needs root" >&2; exit 2
fi

warns=0
warn() { printf 'WARN  %s\n' "$*"; warns=$((warns + 1)); }
ok() { printf 'ok    %s\n' "$*"; }

driver=$({ ethtool -i "$iface" 2>/dev/null || true; } | awk -F': ' '/^driver/{print $2}')
echo "interface $iface, driver ${driver:-unknown}"

link=$(ip -d link show dev "$iface")
if grep -q 'prog/xdpgeneric' <<<"$link"; then
    warn "XDP attached in generic mode: most of the kernel's receive cost is still paid (see the 'native_refused' field of Kolokol's log)"
elif grep -q 'prog/xdp' <<<"$link"; then
    ok "XDP attached in native (driver) mode"
else
    echo "info  no XDP program attached now"
fi

mtu=$(cat "/sys/class/net/$iface/mtu")
if [ "$mtu" -gt 3498 ]; then
    warn "MTU $mtu: single-buffer native XDP needs frames within one page (1500 is right for media)"
else
    ok "MTU $mtu"
fi

feat() { { ethtool -k "$iface" 2>/dev/null || true; } | awk -F': ' -v k="$1" '$1 == k {print $2}' | awk '{print $1}'; }
to_off=()
for f in large-receive-offload rx-gro-hw; do
    v=$(feat "$f")
    case $v in
        on) warn "$f is on: aggregated frames are not single datagrams and some drivers refuse native XDP"; to_off+=("$f") ;;
        off) ok "$f off" ;;
        *) echo "info  $f not reported" ;;
    esac
done
if [ "$(feat rx-vlan-offload)" = on ]; then
    echo "info  rx-vlan-offload on: tagged media would reach XDP untagged; keep media on an untagged port (XDP.md section 2)"
fi

rx=$({ ls -d /sys/class/net/"$iface"/queues/rx-* 2>/dev/null || true; } | wc -l)
tx=$({ ls -d /sys/class/net/"$iface"/queues/tx-* 2>/dev/null || true; } | wc -l)
echo "info  $rx RX and $tx TX queues: one per shard, queue k's IRQ on shard k's core (irq-affinity.sh)"
if ethtool -n "$iface" >/dev/null 2>&1; then
    n=$({ ethtool -n "$iface" 2>/dev/null || true; } | grep -c '^Filter:' || true)
    echo "info  $n ntuple rules installed (needed for AF_XDP with more than one shard)"
fi

rings=$(ethtool -g "$iface" 2>/dev/null || true)
max_rx=$(awk '/maximums/{m=1} /Current/{m=0} m && /^RX:/{print $2; exit}' <<<"$rings")
cur_rx=$(awk '/Current/{c=1} c && /^RX:/{print $2; exit}' <<<"$rings")
max_tx=$(awk '/maximums/{m=1} /Current/{m=0} m && /^TX:/{print $2; exit}' <<<"$rings")
cur_tx=$(awk '/Current/{c=1} c && /^TX:/{print $2; exit}' <<<"$rings")
grow=()
if [[ "$max_rx" =~ ^[0-9]+$ && "$cur_rx" =~ ^[0-9]+$ ]]; then
    if [ "$cur_rx" -lt "$max_rx" ]; then
        warn "RX ring $cur_rx of at most $max_rx"; grow+=(rx "$max_rx")
    else
        ok "RX ring $cur_rx (maximum)"
    fi
fi
if [[ "$max_tx" =~ ^[0-9]+$ && "$cur_tx" =~ ^[0-9]+$ && "$cur_tx" -lt "$max_tx" ]]; then
    warn "TX ring $cur_tx of at most $max_tx"; grow+=(tx "$max_tx")
fi

jit=$(cat /proc/sys/net/core/bpf_jit_enable 2>/dev/null || echo '?')
if [ "$jit" = 1 ] || [ "$jit" = 2 ]; then ok "BPF JIT on"
elif [ "$jit" = '?' ]; then echo "info  net.core.bpf_jit_enable not readable here (network namespace?)"
else warn "net.core.bpf_jit_enable=$jit: the interpreter is several times slower"; fi

cmds=()
for f in "${to_off[@]}"; do
    case $f in
        large-receive-offload) cmds+=("ethtool -K $iface lro off") ;;
        rx-gro-hw) cmds+=("ethtool -K $iface rx-gro-hw off") ;;
    esac
done
((${#grow[@]})) && cmds+=("ethtool -G $iface ${grow[*]}")

if ((${#cmds[@]} == 0)); then
    echo "nothing to change"
elif [ "$mode" = apply ]; then
    for c in "${cmds[@]}"; do echo "+ $c"; $c; done
else
    echo "would run (--apply):"
    printf '  %s\n' "${cmds[@]}"
fi
echo "$warns warning(s)"
