#!/usr/bin/env bash
# Kolokol NIC steering: make shard k's media arrive on RX queue k, whose
# interrupt is handled on shard k's own core (SPEC F-O2, DESIGN "one call
# lives on one core").  See README.md in this directory.
#
#   tuning/irq-affinity.sh [--dry-run|--apply] [options] IFACE [CPUS]
#
#   IFACE   the NIC that carries media, e.g. ens1f0
#   CPUS    shard CPUs in the order of [shards] cpus in the config, e.g.
#           2,3,4,5 or 2-5.  Default: read from $KOLOKOL_CONFIG.
#
# It does three things:
#   1. --queues N: set the NIC's RSS queue count (ethtool -L IFACE combined N).
#   2. Pin the IRQ of RX queue (base+k) to CPUS[k] (/proc/irq/N/smp_affinity_list).
#   3. Print ntuple rules (ethtool -N ... flow-type udp4 dst-port P m MASK
#      action Q) that steer shard k's port slice to queue (base+k).  They are
#      printed, never installed: review them, then run them or pipe
#      `--ntuple-only` into sh.  NIC support for port masks varies.
#
# Port slices: Kolokol splits the media range evenly between shards in the
# order of [shards] cpus.  With len = port_max - port_min + 1 and count
# shards, shard k owns [port_min + k*len/count, port_min + (k+1)*len/count)
# (integer division of k*len).  Shard k runs on cpus[k] and its slice is
# steered to queue base+k.
#
# Options:
#   --dry-run          show what would be done (default); works as any user
#   --apply            do it (root); ntuple rules are still only printed
#   --queues N         set the RSS queue count to N first (ethtool -L)
#   --queue-base Q     shard k uses queue Q+k (default 0)
#   --rest-cpus LIST   pin IRQs of the other queues round-robin onto LIST
#                      (housekeeping / control-plane cores)
#   --irqs LIST        IRQ numbers of RX queues 0,1,2.. when auto-detection
#                      fails (see /proc/interrupts)
#   --port-min P, --port-max P  media range (default: KOLOKOL_PORT_MIN/MAX,
#                      else [media] in $KOLOKOL_CONFIG, else 20000-59999)
#   --udp6             also print udp6 rules (IPv6 media)
#   --loc-base L       give rules explicit locations L, L+1, .. and delete
#                      those first, so re-running replaces instead of adding
#   --ntuple-only      print only the ntuple rules, as a shell script
#   -h, --help
#
# Environment: KOLOKOL_CONFIG (default /etc/kolokol/kolokol.toml),
# KOLOKOL_PORT_MIN, KOLOKOL_PORT_MAX.

set -euo pipefail

readonly PROG=${0##*/}

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
}

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 2
}

warn() {
    printf '%s: warning: %s\n' "$PROG" "$*" >&2
}

# Human-readable output goes to stderr in --ntuple-only mode so that stdout
# is nothing but the rule script.
say() {
    if [[ $NTUPLE_ONLY == yes ]]; then
        printf '%s\n' "$*" >&2
    else
        printf '%s\n' "$*"
    fi
}

section() {
    say ""
    say "== $* =="
}

MODE=dry-run
NTUPLE_ONLY=no
QUEUES=""
QUEUE_BASE=0
REST_CPUS=""
IRQS_OVERRIDE=""
OPT_PORT_MIN=""
OPT_PORT_MAX=""
UDP6=no
LOC_BASE=""
positional=()

need_arg() {
    if (($# < 2)) || [[ -z $2 ]]; then
        die "$1 needs a value (try --help)"
    fi
}

while (($# > 0)); do
    case $1 in
        --dry-run) MODE=dry-run ;;
        --apply) MODE=apply ;;
        --queues) need_arg "$@"; QUEUES=$2; shift ;;
        --queue-base) need_arg "$@"; QUEUE_BASE=$2; shift ;;
        --rest-cpus) need_arg "$@"; REST_CPUS=$2; shift ;;
        --irqs) need_arg "$@"; IRQS_OVERRIDE=$2; shift ;;
        --port-min) need_arg "$@"; OPT_PORT_MIN=$2; shift ;;
        --port-max) need_arg "$@"; OPT_PORT_MAX=$2; shift ;;
        --udp6) UDP6=yes ;;
        --loc-base) need_arg "$@"; LOC_BASE=$2; shift ;;
        --ntuple-only) NTUPLE_ONLY=yes ;;
        -h | --help)
            usage
            exit 0
            ;;
        --*) die "unknown option '$1' (try --help)" ;;
        *) positional+=("$1") ;;
    esac
    shift
done

((${#positional[@]} >= 1)) || die "missing IFACE (try --help)"
((${#positional[@]} <= 2)) || die "too many arguments: '${positional[*]}'; CPUS is one list such as 2,3,4,5 or 2-5"
IFACE=${positional[0]}
CPUS_ARG=${positional[1]:-}

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

uint() {
    local v=$1 what=$2
    [[ $v =~ ^[0-9]{1,9}$ ]] || die "$what='$v' is not a non-negative integer"
    printf '%d' "$((10#$v))"
}

# Reads `key = value` from `[section]` of a TOML file (plain values and
# one-line arrays only; not a TOML parser).
toml_get() {
    local file=$1 sec=$2 key=$3
    awk -v sec="$sec" -v key="$key" '
        /^[[:space:]]*\[/ {
            s = $0
            sub(/^[[:space:]]*\[/, "", s)
            sub(/\].*$/, "", s)
            cur = s
            next
        }
        cur == sec {
            line = $0
            sub(/#.*/, "", line)
            if (match(line, "^[[:space:]]*" key "[[:space:]]*=")) {
                v = substr(line, RLENGTH + 1)
                gsub(/^[[:space:]]+|[[:space:]]+$/, "", v)
                print v
                exit
            }
        }' "$file"
}

# Expands "2,3,8-11" into "2 3 8 9 10 11", keeping the given order.
expand_list() {
    local list=$1 what=$2 item lo hi i out=()
    list=${list// /}
    [[ -n $list ]] || die "$what is empty"
    IFS=',' read -r -a items <<<"$list"
    for item in "${items[@]}"; do
        if [[ $item =~ ^([0-9]{1,6})-([0-9]{1,6})$ ]]; then
            lo=$((10#${BASH_REMATCH[1]}))
            hi=$((10#${BASH_REMATCH[2]}))
            ((lo <= hi)) || die "$what: range '$item' runs backwards"
            for ((i = lo; i <= hi; i++)); do out+=("$i"); done
        elif [[ $item =~ ^[0-9]{1,6}$ ]]; then
            out+=("$((10#$item))")
        else
            die "$what: '$item' is not a number or a range like 2-5"
        fi
    done
    printf '%s\n' "${out[*]}"
}

cpu_online() {
    local c=$1
    [[ -d /sys/devices/system/cpu/cpu$c ]] || return 1
    [[ ! -r /sys/devices/system/cpu/cpu$c/online ]] || [[ $(cat "/sys/devices/system/cpu/cpu$c/online") == 1 ]]
}

cpu_node() {
    local d
    for d in /sys/devices/system/cpu/cpu"$1"/node[0-9]*; do
        [[ -e $d ]] && printf '%s' "${d##*node}" && return 0
    done
    return 0
}

in_cpulist() { # CPU LIST ("2-5,8" form, as in /sys/.../isolated)
    local c=$1 list=$2 item
    [[ -n $list ]] || return 1
    IFS=',' read -r -a items <<<"$list"
    for item in "${items[@]}"; do
        if [[ $item == *-* ]]; then
            ((c >= ${item%-*} && c <= ${item#*-})) && return 0
        else
            ((c == item)) && return 0
        fi
    done
    return 1
}

# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

CONFIG=${KOLOKOL_CONFIG:-/etc/kolokol/kolokol.toml}

[[ $IFACE =~ ^[A-Za-z0-9_.:@-]{1,15}$ ]] || die "'$IFACE' is not a network interface name"
NETDIR=/sys/class/net/$IFACE
if [[ ! -d $NETDIR ]]; then
    if [[ $NTUPLE_ONLY == yes ]]; then
        warn "no interface $IFACE on this host; printing rules only"
    else
        die "no interface $IFACE on this host (ls /sys/class/net)"
    fi
fi

if [[ -z $CPUS_ARG ]]; then
    [[ -r $CONFIG ]] || die "no CPUS given and $CONFIG is not readable; pass the shard CPUs, e.g. $PROG $IFACE 2,3,4,5"
    raw=$(toml_get "$CONFIG" shards cpus)
    [[ $raw =~ ^\[([0-9,[:space:]]*)\]$ ]] ||
        die "could not read a one-line 'cpus = [..]' from [shards] in $CONFIG (got '$raw'); pass the CPUs on the command line"
    CPUS_ARG=${BASH_REMATCH[1]}
    [[ -n ${CPUS_ARG// /} ]] || die "[shards] cpus in $CONFIG is empty (shards not pinned): pass the CPUs on the command line"
    cpus_src=$CONFIG
else
    cpus_src="command line"
fi
cpus_str=$(expand_list "$CPUS_ARG" CPUS)
read -r -a CPUS <<<"$cpus_str"
COUNT=${#CPUS[@]}

declare -A seen=()
for c in "${CPUS[@]}"; do
    [[ -z ${seen[$c]:-} ]] || die "CPU $c is listed twice: each shard needs its own core"
    seen[$c]=1
    if [[ -d /sys/devices/system/cpu ]] && ! cpu_online "$c"; then
        if [[ $NTUPLE_ONLY == yes ]]; then
            warn "CPU $c does not exist or is offline on this host"
        else
            die "CPU $c does not exist or is offline on this host (lscpu -e)"
        fi
    fi
done

REST=()
if [[ -n $REST_CPUS ]]; then
    rest_str=$(expand_list "$REST_CPUS" --rest-cpus)
    read -r -a REST <<<"$rest_str"
    for c in "${REST[@]}"; do
        [[ -z ${seen[$c]:-} ]] || warn "--rest-cpus includes shard CPU $c: other queues' interrupts would land on a shard core"
        cpu_online "$c" || die "--rest-cpus: CPU $c does not exist or is offline"
    done
fi

QUEUE_BASE=$(uint "$QUEUE_BASE" --queue-base)
[[ -z $QUEUES ]] || QUEUES=$(uint "$QUEUES" --queues)
[[ -z $LOC_BASE ]] || LOC_BASE=$(uint "$LOC_BASE" --loc-base)
if [[ -n $QUEUES ]]; then
    ((QUEUES >= QUEUE_BASE + COUNT)) ||
        die "--queues $QUEUES is too few for $COUNT shard(s) starting at queue $QUEUE_BASE: need at least $((QUEUE_BASE + COUNT))"
fi

# Media port range: flag, then environment, then config, then default.
port_value() { # FLAG ENV KEY DEFAULT
    local v
    if [[ -n $1 ]]; then
        uint "$1" "--port-${3#port_}"
    elif [[ -n $2 ]]; then
        uint "$2" "KOLOKOL_$(tr '[:lower:]' '[:upper:]' <<<"$3")"
    elif [[ -r $CONFIG ]] && v=$(toml_get "$CONFIG" media "$3") && [[ -n $v ]]; then
        uint "$v" "$3 in $CONFIG"
    else
        printf '%s' "$4"
    fi
}
PORT_MIN=$(port_value "$OPT_PORT_MIN" "${KOLOKOL_PORT_MIN:-}" port_min 20000)
PORT_MAX=$(port_value "$OPT_PORT_MAX" "${KOLOKOL_PORT_MAX:-}" port_max 59999)
((PORT_MAX <= 65535)) || die "media port_max=$PORT_MAX is above 65535"
((PORT_MIN >= 1024)) || die "media port_min=$PORT_MIN is a privileged port; use a range above 1024"
((PORT_MIN < PORT_MAX)) || die "media port_min=$PORT_MIN must be below port_max=$PORT_MAX"
LEN=$((PORT_MAX - PORT_MIN + 1))
((LEN >= COUNT)) || die "media range $PORT_MIN-$PORT_MAX has fewer ports ($LEN) than shards ($COUNT)"

# How queue numbers are written in messages: "k" or "2+k".
if ((QUEUE_BASE == 0)); then qk="k"; else qk="$QUEUE_BASE+k"; fi

have_ethtool=no
command -v ethtool >/dev/null && have_ethtool=yes

if [[ $MODE == apply && $NTUPLE_ONLY == no ]]; then
    ((EUID == 0)) || die "--apply writes /proc/irq and changes NIC channels: run it as root (--dry-run works as any user)"
fi

# ---------------------------------------------------------------------------
# NIC queues and their IRQs
# ---------------------------------------------------------------------------

rx_queue_count() {
    local n=0 d
    for d in "$NETDIR"/queues/rx-*; do [[ -e $d ]] && n=$((n + 1)); done
    printf '%s' "$n"
}

# Prints "max_combined cur_combined max_rx cur_rx" from `ethtool -l`
# ("n/a" or 0 where the driver has no such channel type).
channels() {
    ethtool -l "$IFACE" 2>/dev/null | awk '
        /^Pre-set maximums/        { s = "max" }
        /^Current hardware settings/ { s = "cur" }
        /^Combined:/ { v[s "c"] = $2 }
        /^RX:/       { v[s "r"] = $2 }
        END { printf "%s %s %s %s\n", v["maxc"] + 0, v["curc"] + 0, v["maxr"] + 0, v["curr"] + 0 }'
}

# Prints "queue irq" lines for the RX queues of $IFACE, in queue order.
# Drivers name their vectors differently in /proc/interrupts:
#   Intel/Broadcom/ENA  eth0-TxRx-3, i40e-eth0-TxRx-3, ens5-Tx-Rx-3, eth0-rx-3
#   Mellanox mlx5       mlx5_comp3@pci:0000:3b:00.0
#   virtio-net          virtio2-input.3
# Vectors for admin, link, events or TX only are skipped.
discover_irqs() {
    local dev pci="" virt=""
    dev=$(readlink -f "$NETDIR/device" 2>/dev/null || true)
    if [[ -n $dev ]]; then
        if [[ ${dev##*/} == virtio* ]]; then
            virt=${dev##*/}
            pci=$(basename "$(dirname "$dev")")
        else
            pci=${dev##*/}
        fi
    fi
    awk -v ifn="$IFACE" -v pci="$pci" -v virt="$virt" '
        # True if w occurs in s delimited by non-alphanumerics (eth1 is not in eth10-TxRx-0).
        function has_word(s, w,    i, rest, off, before, after) {
            if (w == "") return 0
            rest = s; off = 0
            while ((i = index(rest, w)) > 0) {
                before = (off + i > 1) ? substr(s, off + i - 1, 1) : ""
                after = substr(s, off + i + length(w), 1)
                if (before !~ /[A-Za-z0-9]/ && after !~ /[A-Za-z0-9]/) return 1
                off += i; rest = substr(s, off + 1)
            }
            return 0
        }
        NR > 1 {
            irq = $1; sub(/:$/, "", irq)
            if (irq !~ /^[0-9]+$/) next
            name = $NF
            base = name; sub(/@.*/, "", base)
            if (base == ifn || base == virt) next
            if (!(has_word(name, ifn) || (pci != "" && index(name, pci) > 0) || (virt != "" && index(name, virt "-") == 1))) next
            lb = tolower(base)
            if (lb ~ /config|async|ctrl|misc|link|event|cmd|pages|fw|aux|mbx|err|mgmnt|mgmt|ptp/) next
            if (lb ~ /output/ || (lb ~ /tx/ && lb !~ /rx/)) next
            if (!match(base, /[0-9]+$/)) next
            print substr(base, RSTART) + 0, irq
        }' /proc/interrupts | sort -n -k1,1 -u
}

declare -A QIRQ=()
load_irqs() {
    local q irq i=0 list
    QIRQ=()
    if [[ -n $IRQS_OVERRIDE ]]; then
        list=$(expand_list "$IRQS_OVERRIDE" --irqs)
        for irq in $list; do
            [[ -d /proc/irq/$irq ]] || die "--irqs: IRQ $irq does not exist (/proc/irq/$irq)"
            QIRQ[$i]=$irq
            i=$((i + 1))
        done
        return 0
    fi
    while read -r q irq; do
        [[ -n $q ]] && QIRQ[$q]=$irq
    done < <(discover_irqs)
}

if [[ $NTUPLE_ONLY == no ]]; then
    say "kolokol NIC steering: mode $MODE, interface $IFACE"
    say "shards: $COUNT on CPUs ${CPUS[*]} (from $cpus_src); shard k -> RX queue $qk"
    say "media ports $PORT_MIN-$PORT_MAX"

    section "RSS queues"
    nq=$(rx_queue_count)
    say "$IFACE has $nq RX queue(s) now"
    if [[ -n $QUEUES ]]; then
        [[ $have_ethtool == yes ]] || die "--queues needs ethtool (apt-get install ethtool)"
        read -r maxc curc maxr curr <<<"$(channels)"
        if ((maxc > 0)); then
            kind=combined max_q=$maxc cur_q=$curc
        elif ((maxr > 0)); then
            kind=rx max_q=$maxr cur_q=$curr
        else
            die "ethtool -l $IFACE reports no settable channels: this driver cannot change its queue count"
        fi
        ((QUEUES <= max_q)) || die "--queues $QUEUES exceeds what $IFACE supports ($kind max $max_q)"
        if ((cur_q == QUEUES)); then
            say "$kind channels already $QUEUES"
        elif [[ $MODE == dry-run ]]; then
            say "would run: ethtool -L $IFACE $kind $QUEUES   (now $cur_q)"
            say "  (this resets the link briefly and may renumber IRQs and drop ntuple"
            say "   rules; the IRQs below are today's and are looked up again on --apply)"
        else
            ethtool -L "$IFACE" "$kind" "$QUEUES"
            say "ran: ethtool -L $IFACE $kind $QUEUES   (was $cur_q)"
            sleep 1 # let the driver re-register its vectors
        fi
        nq_after=$QUEUES
    else
        nq_after=$nq
    fi
    if ((nq_after < QUEUE_BASE + COUNT)); then
        msg="$IFACE has $nq_after RX queue(s) but shards need queues $QUEUE_BASE..$((QUEUE_BASE + COUNT - 1)); raise them with --queues $((QUEUE_BASE + COUNT))"
        [[ $MODE == apply ]] && die "$msg"
        warn "$msg"
    elif ((nq_after > QUEUE_BASE + COUNT)) && ((${#REST[@]} == 0)); then
        say "note: queues other than $QUEUE_BASE..$((QUEUE_BASE + COUNT - 1)) still receive RSS-hashed"
        say "  non-media traffic (SIP, API).  Pin their IRQs with --rest-cpus, or"
        say "  hash RSS only over the shard queues:"
        say "  ethtool -X $IFACE start $QUEUE_BASE equal $COUNT"
    fi

    section "IRQ affinity"
    load_irqs
    if ((${#QIRQ[@]} == 0)); then
        warn "found no RX queue IRQs for $IFACE in /proc/interrupts; look them up (grep $IFACE /proc/interrupts) and pass them with --irqs"
    fi

    irqbalance_on=no
    if command -v systemctl >/dev/null && systemctl is-active --quiet irqbalance 2>/dev/null; then
        irqbalance_on=yes
    elif pgrep -x irqbalance >/dev/null 2>&1; then
        irqbalance_on=yes
    fi
    [[ $irqbalance_on == no ]] ||
        warn "irqbalance is running and will move these IRQs again within seconds: systemctl disable --now irqbalance (or ban the shard CPUs, see host.sh)"

    failures=0
    pin_irq() { # IRQ CPU LABEL
        local irq=$1 cpu=$2 label=$3 f cur
        f=/proc/irq/$irq/smp_affinity_list
        cur=$(cat "$f" 2>/dev/null || printf '?')
        if [[ $cur == "$cpu" ]]; then
            say "  $label: IRQ $irq already on CPU $cpu"
        elif [[ $MODE == dry-run ]]; then
            say "  $label: IRQ $irq on CPU(s) $cur -> would pin to CPU $cpu"
        elif { printf '%s\n' "$cpu" >"$f"; } 2>/dev/null; then
            say "  $label: IRQ $irq pinned to CPU $cpu (was $cur; effective $(cat "/proc/irq/$irq/effective_affinity_list" 2>/dev/null || printf '?'))"
        else
            warn "$label: could not pin IRQ $irq to CPU $cpu; a kernel-managed IRQ (the driver chose its spread) cannot be moved, so pick shard CPUs that match /proc/irq/$irq/effective_affinity_list instead"
            failures=$((failures + 1))
        fi
    }

    nic_node=$(cat "$NETDIR/device/numa_node" 2>/dev/null || printf '%s' -1)
    isolated=$(cat /sys/devices/system/cpu/isolated 2>/dev/null || true)
    not_isolated=()
    for ((k = 0; k < COUNT; k++)); do
        q=$((QUEUE_BASE + k))
        c=${CPUS[$k]}
        if [[ -n ${QIRQ[$q]:-} ]]; then
            pin_irq "${QIRQ[$q]}" "$c" "shard $k rx-$q"
        else
            say "  shard $k rx-$q: no IRQ found for this queue"
        fi
        node=$(cpu_node "$c")
        if ((nic_node >= 0)) && [[ -n $node ]] && ((node != nic_node)); then
            warn "shard $k's CPU $c is on NUMA node $node but $IFACE is on node $nic_node: every packet crosses the interconnect"
        fi
        in_cpulist "$c" "$isolated" || not_isolated+=("$c")
    done
    if ((${#REST[@]} > 0)); then
        r=0
        for q in $(printf '%s\n' "${!QIRQ[@]}" | sort -n); do
            ((q >= QUEUE_BASE && q < QUEUE_BASE + COUNT)) && continue
            pin_irq "${QIRQ[$q]}" "${REST[$((r % ${#REST[@]}))]}" "other rx-$q"
            r=$((r + 1))
        done
    fi
    if ((${#not_isolated[@]} > 0)); then
        say "note: shard CPU(s) ${not_isolated[*]} are not isolated (isolcpus=); other tasks may"
        say "  share them.  See README.md, CPU isolation."
    fi
    if ((failures > 0)); then
        warn "$failures IRQ(s) could not be pinned"
    fi
fi

# ---------------------------------------------------------------------------
# ntuple rules
# ---------------------------------------------------------------------------

# Prints the rule script on stdout.
emit() {
    printf '%s\n' "$*"
}

# Splits [start, end) into aligned power-of-two blocks, printing
# "first_port mask" per block; the mask has 1s in the bits to ignore.
blocks() {
    local start=$1 end=$2 size
    while ((start < end)); do
        size=1
        while ((size < 65536 && start % (size * 2) == 0 && start + size * 2 <= end)); do
            size=$((size * 2))
        done
        printf '%s %s\n' "$start" "$((size - 1))"
        start=$((start + size))
    done
}

if [[ ! -d $NETDIR ]]; then
    ntuple_state="unknown (no such interface here)"
elif [[ $have_ethtool == no ]]; then
    ntuple_state="unknown (ethtool not installed)"
else
    ntuple_state=$(ethtool -k "$IFACE" 2>/dev/null | awk -F': ' '/^ntuple-filters:/ {print $2}')
    ntuple_state=${ntuple_state:-unknown}
fi

[[ $NTUPLE_ONLY == yes ]] || section "ntuple rules (printed, not installed)"

emit "# ntuple rules for $IFACE: shard k's media port slice -> RX queue $qk"
emit "# (generated by tuning/irq-affinity.sh for ports $PORT_MIN-$PORT_MAX, $COUNT shard(s), CPUs ${CPUS[*]})."
emit "# Kolokol splits the media range evenly between shards in the order of"
emit "# [shards] cpus: len = $LEN, shard k owns [$PORT_MIN + k*$LEN/$COUNT, $PORT_MIN + (k+1)*$LEN/$COUNT)."
emit "# ethtool's 'm' is a don't-care mask: 'dst-port 32768 m 0x3fff' matches 32768-49151."
emit "set -e"
case $ntuple_state in
    on*) ;;
    *fixed*) emit "# NOTE: $IFACE reports ntuple-filters: $ntuple_state -- this NIC/driver cannot take these rules." ;;
    off*) emit "ethtool -K $IFACE ntuple on" ;;
    *) emit "# NOTE: ntuple-filters state of $IFACE: $ntuple_state; enable with: ethtool -K $IFACE ntuple on" ;;
esac

families=(udp4)
[[ $UDP6 == no ]] || families+=(udp6)
total_rules=0
multi_block=no
odd_boundary=""
masks=()
loc=${LOC_BASE:-0}
for ((k = 0; k < COUNT; k++)); do
    lo=$((PORT_MIN + k * LEN / COUNT))
    hi=$((PORT_MIN + (k + 1) * LEN / COUNT))
    q=$((QUEUE_BASE + k))
    ((k == 0 || lo % 2 == 0)) || odd_boundary+="${odd_boundary:+, }$lo"
    mapfile -t blks < <(blocks "$lo" "$hi")
    ((${#blks[@]} == 1)) || multi_block=yes
    emit ""
    emit "# shard $k (CPU ${CPUS[$k]}): ports $lo-$((hi - 1)) -> queue $q (${#blks[@]} block(s))"
    for fam in "${families[@]}"; do
        for b in "${blks[@]}"; do
            read -r port mask <<<"$b"
            masks+=("$mask")
            match="dst-port $port"
            ((mask == 0)) || match+=" m $(printf '0x%x' "$mask")"
            if [[ -n $LOC_BASE ]]; then
                emit "ethtool -N $IFACE delete $loc 2>/dev/null || true"
                emit "ethtool -N $IFACE flow-type $fam $match action $q loc $loc"
                loc=$((loc + 1))
            else
                emit "ethtool -N $IFACE flow-type $fam $match action $q"
            fi
            total_rules=$((total_rules + 1))
        done
    done
done

distinct_masks=$(printf '%s\n' "${masks[@]}" | sort -u | wc -l)
emit ""
emit "# $total_rules rule(s), $distinct_masks distinct mask(s).  Check with: ethtool -n $IFACE"
if [[ $multi_block == yes || $distinct_masks -gt 1 ]]; then
    emit "# Some slices are not one aligned power-of-two block, so they need several"
    emit "# rules with different masks.  NICs with one global port mask (ixgbe) or"
    emit "# no partial masks (i40e) cannot do that; mlx5 can.  For one rule per"
    emit "# shard with a single mask, choose a range of $COUNT aligned blocks:"
    for ((b = 15; b >= 1; b--)); do
        blk=$((1 << b))
        start=$(((PORT_MIN + blk - 1) / blk * blk))
        if ((start + COUNT * blk - 1 <= PORT_MAX)); then
            emit "#   inside $PORT_MIN-$PORT_MAX: port_min = $start, port_max = $((start + COUNT * blk - 1)) ($COUNT x $blk ports)"
            break
        fi
    done
    for ((b = 15; b >= 1; b--)); do
        blk=$((1 << b))
        start=$(((2048 + blk - 1) / blk * blk))
        if ((start + COUNT * blk - 1 <= 65535)); then
            emit "#   largest:  port_min = $start, port_max = $((start + COUNT * blk - 1)) ($COUNT x $blk ports; re-run host.sh for the ephemeral range)"
            break
        fi
    done
else
    emit "# Every slice is one aligned block with the same mask: the most portable layout."
fi
if [[ -n $odd_boundary ]]; then
    emit "# WARNING: slice boundary port(s) $odd_boundary are odd, so an RTP port"
    emit "# (even) at the end of one slice has its RTCP port (+1) in the next one."
    emit "# Pick a range whose length splits into even slices."
fi

if [[ $NTUPLE_ONLY == no ]]; then
    section "verify"
    say "  grep -E '$IFACE|mlx5_comp|virtio' /proc/interrupts    # counts grow only in the shard CPU's column"
    say "  cat /proc/irq/<irq>/effective_affinity_list"
    say "  ethtool -S $IFACE | grep -iE 'rx.?[0-9]+.?packets|rx_queue_[0-9]+_packets'   # per-queue counters"
    say "  ethtool -n $IFACE                                  # installed ntuple rules"
    if [[ $MODE == dry-run ]]; then
        say ""
        say "Dry run: nothing was changed.  Re-run with --apply as root to pin IRQs"
        say "(and set queues); install the ntuple rules with: $PROG ... --ntuple-only | sh"
    fi
    if [[ $MODE == apply ]] && ((failures > 0)); then
        exit 1
    fi
fi
