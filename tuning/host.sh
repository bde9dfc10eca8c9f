#!/usr/bin/env bash
# Kolokol host tuning: kernel network and file-descriptor settings for a
# bare-metal Linux host that runs the gateway (SPEC F-O2).  See README.md in
# this directory for the why behind the whole procedure.
#
#   tuning/host.sh              # same as --dry-run: show what would change
#   tuning/host.sh --dry-run    # read-only; works as any user
#   sudo tuning/host.sh --apply # write the files below and load the sysctls
#
# What it writes (with --apply):
#   /etc/sysctl.d/60-kolokol.conf          socket buffers, backlog, port ranges,
#                                          fd limits (loaded now and at boot)
#   /etc/security/limits.d/60-kolokol.conf nofile/memlock for PAM sessions
# Everything else (irqbalance, conntrack, io_uring, CPU isolation) is checked
# and reported as advice, never changed.
#
# Idempotent: a file is rewritten only when its content would change, and
# values are only ever raised above what the host already has (except the
# port ranges, which must be exact).  Running it twice changes nothing.
#
# Environment (all optional):
#   KOLOKOL_PORT_MIN, KOLOKOL_PORT_MAX  media port range; default: [media]
#                      port_min/port_max from $KOLOKOL_CONFIG, else 20000-59999
#   KOLOKOL_CONFIG     config to read the range from (/etc/kolokol/kolokol.toml)
#   KOLOKOL_EPHEMERAL_MIN  lowest kernel ephemeral port (default: 10,000 ports
#                      below port_min, never below 1024)
#   KOLOKOL_RESERVED_EXTRA  extra ports the kernel must never hand out
#                      automatically, e.g. SIP/ng/API listeners (2223,5060-5061)
#   KOLOKOL_NOFILE     per-process fd limit to allow (1048576)
#   KOLOKOL_USER       user the limits.d entry is for (kolokol)
#   KOLOKOL_BUSY_POLL_US  enable net.core.busy_read/busy_poll (µs); default off
#   KOLOKOL_SYSCTL_FILE, KOLOKOL_LIMITS_FILE  output paths (for testing)

set -euo pipefail

readonly PROG=${0##*/}
MODE=dry-run

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

say() {
    printf '%s\n' "$*"
}

section() {
    printf '\n== %s ==\n' "$*"
}

while (($# > 0)); do
    case $1 in
        --dry-run) MODE=dry-run ;;
        --apply) MODE=apply ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# Reads `key = value` from `[section]` of a TOML file: enough for the plain
# integers and one-line arrays this script needs, not a TOML parser.
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

# Validates a decimal integer and prints it without leading zeros (bash would
# read "020000" as octal).  $2 names the value in the error message.
uint() {
    local v=$1 what=$2
    [[ $v =~ ^[0-9]{1,18}$ ]] || die "$what='$v' is not a non-negative integer"
    printf '%d' "$((10#$v))"
}

max() {
    if (($1 > $2)); then printf '%s' "$1"; else printf '%s' "$2"; fi
}

sysctl_path() {
    printf '/proc/sys/%s' "${1//.//}"
}

# Current value of a sysctl with runs of blanks squeezed to one space, or
# nothing when the key does not exist on this kernel / in this namespace.
sysctl_get() {
    local p
    p=$(sysctl_path "$1")
    [[ -r $p ]] || return 0
    tr -s ' \t' '  ' <"$p" | sed 's/^ //; s/ $//'
}

# Shows how a file would change, or writes it (atomically, only if changed).
install_file() {
    local path=$1 mode=$2 content=$3 tmp
    if [[ -f $path ]] && [[ "$(cat "$path")" == "$content" ]]; then
        say "$path: up to date, not rewritten"
        return 0
    fi
    if [[ $MODE == dry-run ]]; then
        if [[ -f $path ]]; then
            say "$path: would change:"
            diff -u "$path" <(printf '%s\n' "$content") || true
        else
            say "$path: would be created with:"
            printf '%s\n' "$content" | sed 's/^/    /'
        fi
        return 0
    fi
    mkdir -p "$(dirname "$path")"
    tmp=$(mktemp "$path.XXXXXX")
    printf '%s\n' "$content" >"$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$path"
    say "$path: written"
}

# ---------------------------------------------------------------------------
# Media port range and the kernel's ephemeral range
# ---------------------------------------------------------------------------

CONFIG=${KOLOKOL_CONFIG:-/etc/kolokol/kolokol.toml}
cfg_min="" cfg_max=""
if [[ -r $CONFIG ]]; then
    cfg_min=$(toml_get "$CONFIG" media port_min)
    cfg_max=$(toml_get "$CONFIG" media port_max)
fi

if [[ -n ${KOLOKOL_PORT_MIN:-} ]]; then
    PORT_MIN=$(uint "$KOLOKOL_PORT_MIN" KOLOKOL_PORT_MIN)
    min_src="KOLOKOL_PORT_MIN"
elif [[ -n $cfg_min ]]; then
    PORT_MIN=$(uint "$cfg_min" "port_min in $CONFIG")
    min_src="$CONFIG"
else
    PORT_MIN=20000
    min_src="default"
fi
if [[ -n ${KOLOKOL_PORT_MAX:-} ]]; then
    PORT_MAX=$(uint "$KOLOKOL_PORT_MAX" KOLOKOL_PORT_MAX)
    max_src="KOLOKOL_PORT_MAX"
elif [[ -n $cfg_max ]]; then
    PORT_MAX=$(uint "$cfg_max" "port_max in $CONFIG")
    max_src="$CONFIG"
else
    PORT_MAX=59999
    max_src="default"
fi

# The kernel's ephemeral range goes below the media range and needs room
# there: at least 1024 ports above the privileged ports.
readonly EPHEMERAL_PORTS_MIN=1024
readonly PORT_MIN_LOWEST=$((1024 + EPHEMERAL_PORTS_MIN))

((PORT_MAX <= 65535)) ||
    die "media port_max=$PORT_MAX ($max_src) is above 65535, the largest UDP port"
((PORT_MIN < PORT_MAX)) ||
    die "media port_min=$PORT_MIN ($min_src) must be below port_max=$PORT_MAX ($max_src)"
((PORT_MIN >= PORT_MIN_LOWEST)) ||
    die "media port_min=$PORT_MIN ($min_src) leaves $((PORT_MIN > 1024 ? PORT_MIN - 1024 : 0)) ports between 1024 and it for the kernel's ephemeral range; need at least $EPHEMERAL_PORTS_MIN, so port_min must be >= $PORT_MIN_LOWEST"
if ((PORT_MIN % 2 != 0)); then
    warn "media port_min=$PORT_MIN is odd: RTP uses even ports and RTCP the odd port above (RFC 3550 §11), so the first port is wasted and slice boundaries may split an RTP/RTCP pair"
fi
if ((PORT_MAX - PORT_MIN + 1 < 1000)); then
    warn "media range $PORT_MIN-$PORT_MAX has only $((PORT_MAX - PORT_MIN + 1)) ports: at 2-4 ports per call that is a few hundred calls"
fi
if [[ $min_src != "$CONFIG" && $cfg_min =~ ^[0-9]+$ && $((10#$cfg_min)) -ne $PORT_MIN ]] ||
    [[ $max_src != "$CONFIG" && $cfg_max =~ ^[0-9]+$ && $((10#$cfg_max)) -ne $PORT_MAX ]]; then
    warn "the range used here ($PORT_MIN-$PORT_MAX) differs from $CONFIG ($cfg_min-$cfg_max), which is what the gateway uses"
fi

# Ephemeral range: the ports the kernel picks for bind(port 0) and for
# connect() without bind -- outgoing TCP (webhooks, PostgreSQL, SIP over
# TCP/TLS to trunks) and unconnected UDP clients (DNS).  10,000 ports is
# plenty for a gateway's few outbound connections and keeps well clear of
# the low service ports.
EPH_MAX=$((PORT_MIN - 1))
if [[ -n ${KOLOKOL_EPHEMERAL_MIN:-} ]]; then
    EPH_MIN=$(uint "$KOLOKOL_EPHEMERAL_MIN" KOLOKOL_EPHEMERAL_MIN)
    ((EPH_MIN >= 1024)) ||
        die "KOLOKOL_EPHEMERAL_MIN=$EPH_MIN is below 1024: ephemeral ports must not be privileged ports"
    ((EPH_MAX - EPH_MIN + 1 >= EPHEMERAL_PORTS_MIN)) ||
        die "KOLOKOL_EPHEMERAL_MIN=$EPH_MIN leaves $((EPH_MAX - EPH_MIN + 1)) ephemeral ports below port_min=$PORT_MIN; need at least $EPHEMERAL_PORTS_MIN"
else
    EPH_MIN=$(max 1024 $((PORT_MIN - 10000)))
fi
# Linux warns when both ends of ip_local_port_range have the same parity: it
# splits the range into even ports for connect() and odd ones for bind(0).
if (((EPH_MIN % 2) == (EPH_MAX % 2))); then
    EPH_MIN=$((EPH_MIN + 1))
fi

# Reserved ports: the kernel never hands these out automatically, even if
# another package later widens ip_local_port_range over them.  An explicit
# bind() (what Kolokol does) still works.
RESERVED_EXTRA=${KOLOKOL_RESERVED_EXTRA-2223,5060-5061}
reserved_list=""
if [[ -n $RESERVED_EXTRA ]]; then
    IFS=',' read -r -a extra_items <<<"$RESERVED_EXTRA"
    for item in "${extra_items[@]}"; do
        item=${item// /}
        if [[ $item =~ ^([0-9]{1,5})(-([0-9]{1,5}))?$ ]]; then
            lo=$((10#${BASH_REMATCH[1]}))
            hi=$((10#${BASH_REMATCH[3]:-${BASH_REMATCH[1]}}))
            ((lo >= 1 && lo <= hi && hi <= 65535)) ||
                die "KOLOKOL_RESERVED_EXTRA: '$item' is not a port or ascending range within 1-65535"
            if ((lo <= PORT_MAX && hi >= PORT_MIN)); then
                warn "reserved port(s) $item lie inside the media range $PORT_MIN-$PORT_MAX: the gateway would also try to use them for media; move the listener or the range"
            fi
            reserved_list+="${reserved_list:+,}$item"
        else
            die "KOLOKOL_RESERVED_EXTRA: '$item' is not a port (5060) or a range (5060-5061); expected a comma-separated list"
        fi
    done
fi
reserved_list+="${reserved_list:+,}$PORT_MIN-$PORT_MAX"

NOFILE=$(uint "${KOLOKOL_NOFILE:-1048576}" KOLOKOL_NOFILE)
((NOFILE >= 1024)) || die "KOLOKOL_NOFILE=$NOFILE is too small to run anything"
KUSER=${KOLOKOL_USER:-kolokol}
[[ $KUSER =~ ^[a-z_][a-z0-9_-]*\$?$ ]] || die "KOLOKOL_USER='$KUSER' is not a valid user name"
BUSY_POLL_US=$(uint "${KOLOKOL_BUSY_POLL_US:-0}" KOLOKOL_BUSY_POLL_US)

SYSCTL_FILE=${KOLOKOL_SYSCTL_FILE:-/etc/sysctl.d/60-kolokol.conf}
LIMITS_FILE=${KOLOKOL_LIMITS_FILE:-/etc/security/limits.d/60-kolokol.conf}

# ---------------------------------------------------------------------------
# Build /etc/sysctl.d/60-kolokol.conf
# ---------------------------------------------------------------------------

conf=""
plan=()

# Starts a block of settings with a blank line and its explanation.
comment() {
    local line
    conf+=$'\n'
    for line in "$@"; do conf+="# $line"$'\n'; done
}

# Adds `key = value` to the file.  Keys this kernel does not have are written
# as a comment so that `sysctl -p` does not fail on them.
setting() {
    local key=$1 val=$2 cur
    if [[ ! -e $(sysctl_path "$key") ]]; then
        conf+="# $key = $val  (not present on this kernel when generated)"$'\n'
        plan+=("$key|(absent)|skipped")
        return 0
    fi
    cur=$(sysctl_get "$key")
    conf+="$key = $val"$'\n'
    plan+=("$key|$cur|$val")
}

# Like `setting`, but never lowers what the host already has: another tool
# (or systemd, which sets fs.file-max to the maximum) may have gone higher.
raise() {
    local key=$1 want=$2 cur
    cur=$(sysctl_get "$key")
    if [[ $cur =~ ^[0-9]+$ ]]; then
        want=$(max "$cur" "$want")
    fi
    setting "$key" "$want"
}

mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
page_bytes=$(getconf PAGESIZE)
ram_pages=$((mem_kib * 1024 / page_bytes))

conf+="# Kolokol host tuning -- generated by tuning/host.sh; edit that, not this."$'\n'
conf+="# Media ports $PORT_MIN-$PORT_MAX; kernel ephemeral ports $EPH_MIN-$EPH_MAX."$'\n'
conf+="# Values are never lower than what the host had when this was generated."$'\n'

comment "--- Socket buffers -------------------------------------------------" \
    "Ceilings for SO_RCVBUF/SO_SNDBUF.  The SIP and ng sockets are shared by" \
    "every peer and need large buffers to absorb signalling bursts (SIPp's own" \
    "64 KiB buffer overflows at a few thousand CPS); without a high ceiling the" \
    "kernel silently caps what a socket asks for.  A ceiling costs nothing" \
    "until a socket actually queues that much."
raise net.core.rmem_max 33554432
raise net.core.wmem_max 33554432
comment "Default buffer of every other socket: one per media leg, tens of" \
    "thousands of them.  RTP at 50 packets/s per leg needs only a few packets" \
    "of queue and deeper queues only hold stale audio, so this stays near the" \
    "kernel's 208 KiB; written out so a host that lowered it does not drop" \
    "media in short stalls.  Memory is charged only while packets are queued."
raise net.core.rmem_default 262144
raise net.core.wmem_default 262144

comment "Pages (not bytes) all UDP sockets together may hold: min / pressure /" \
    "max.  Past 'pressure' every UDP socket is squeezed and past 'max' UDP" \
    "drops everywhere (nstat UdpRcvbufErrors/UdpMemErrors).  Kernel defaults" \
    "are about 1/16, 1/8 and 1/4 of RAM; a dedicated media host has RAM to" \
    "spare (gateway state is < 4 KiB per call), so: 1/8, 1/4, 1/2 of RAM" \
    "($((mem_kib / 1024)) MiB here, ${page_bytes}-byte pages)."
cur_udp_mem=$(sysctl_get net.ipv4.udp_mem)
read -r um0 um1 um2 <<<"${cur_udp_mem:-0 0 0}"
setting net.ipv4.udp_mem "$(max "${um0:-0}" $((ram_pages / 8))) $(max "${um1:-0}" $((ram_pages / 4))) $(max "${um2:-0}" $((ram_pages / 2)))"

comment "--- Receive path -----------------------------------------------------" \
    "Per-CPU queue of packets waiting for the network softirq.  Loopback, veth" \
    "and RPS go through it (the load generator on a test host does), and the" \
    "default 1000 drops bursts: see the 2nd column of /proc/net/softnet_stat."
raise net.core.netdev_max_backlog 16384
comment "Packets one NET_RX softirq pass may process before it yields (and leaves" \
    "the rest to ksoftirqd, which then competes with the shard thread as an" \
    "ordinary task).  Doubled from 300 so a burst on a shard's queue is" \
    "drained in one pass; not higher, because the shard thread shares that core" \
    "and waits while the softirq runs (p99 latency, N-4).  The time cap," \
    "net.core.netdev_budget_usecs, is left at its default.  Raise further only" \
    "if the 3rd column of /proc/net/softnet_stat (time_squeeze) keeps growing."
raise net.core.netdev_budget 600

comment "--- Port ranges ------------------------------------------------------" \
    "Kolokol binds every media port explicitly.  If the kernel also hands out" \
    "ports from that range to outgoing connections (default 32768-60999 overlaps" \
    "20000-59999), a webhook or DNS query can occupy a port the gateway needs" \
    "and that call fails.  So the ephemeral range goes right below the media" \
    "range, with start and end of different parity as the kernel prefers."
setting net.ipv4.ip_local_port_range "$EPH_MIN $EPH_MAX"
comment "Belt and braces: even if another sysctl file later widens the ephemeral" \
    "range, the kernel never picks these automatically.  Also the gateway's" \
    "own listeners (ng 2223, SIP 5060-5061 by default: KOLOKOL_RESERVED_EXTRA)."
setting net.ipv4.ip_local_reserved_ports "$reserved_list"

comment "--- File descriptors -------------------------------------------------" \
    "One UDP socket per media leg port (two with separate RTCP), plus SIP/TLS" \
    "connections: tens of thousands of calls need hundreds of thousands of" \
    "descriptors.  fs.nr_open caps any process's RLIMIT_NOFILE, so it must be" \
    "at least the unit's LimitNOFILE=$NOFILE; fs.file-max caps the whole system."
raise fs.nr_open "$NOFILE"
raise fs.file-max $((NOFILE * 2))

comment "--- Busy polling (off unless KOLOKOL_BUSY_POLL_US is set) ------------" \
    "busy_read/busy_poll make blocking reads and poll/epoll spin on the NIC" \
    "queue for N µs instead of sleeping until the interrupt: lower latency, but" \
    "the core shows 100% even when idle, which hides real CPU per packet (N-1)," \
    "and it needs the shard alone on an isolated core.  io_uring ignores these" \
    "two: a ring busy-polls only if the application registers NAPI polling on it" \
    "(IORING_REGISTER_NAPI, Linux 6.9+).  Per-NIC knobs that pair with busy" \
    "polling: /sys/class/net/IF/napi_defer_hard_irqs and gro_flush_timeout."
if ((BUSY_POLL_US > 0)); then
    setting net.core.busy_read "$BUSY_POLL_US"
    setting net.core.busy_poll "$BUSY_POLL_US"
else
    conf+="#net.core.busy_read = 50"$'\n'
    conf+="#net.core.busy_poll = 50"$'\n'
fi

# ---------------------------------------------------------------------------
# Build /etc/security/limits.d/60-kolokol.conf
# ---------------------------------------------------------------------------

limits="# Kolokol fd and memlock limits -- generated by tuning/host.sh.
# Applies to PAM login sessions: an operator running kolokol, loadgen or a
# benchmark by hand.  The systemd service ignores this file; its unit sets
# LimitNOFILE= and LimitMEMLOCK= itself.
# nofile: one socket per media leg port, tens of thousands of calls.
$KUSER soft nofile $NOFILE
$KUSER hard nofile $NOFILE
# memlock: io_uring registered buffers and (planned) AF_XDP packet memory are
# pinned and charged to RLIMIT_MEMLOCK; the default 8 MiB is one buffer pool.
$KUSER soft memlock unlimited
$KUSER hard memlock unlimited"

# ---------------------------------------------------------------------------
# Report and apply
# ---------------------------------------------------------------------------

say "kolokol host tuning: mode $MODE"
say "media ports $PORT_MIN-$PORT_MAX (port_min: $min_src, port_max: $max_src)"
say "kernel ephemeral ports -> $EPH_MIN-$EPH_MAX; reserved -> $reserved_list"

section "sysctl (current -> target)"
for row in "${plan[@]}"; do
    IFS='|' read -r key cur want <<<"$row"
    if [[ $cur == "$want" ]]; then
        note="ok"
    elif [[ $want == skipped ]]; then
        note="not on this kernel"
    else
        note="change"
    fi
    printf '  %-34s %-26s -> %-26s %s\n' "$key" "${cur:-(empty)}" "$want" "$note"
done

if [[ $MODE == apply ]]; then
    ((EUID == 0)) || die "--apply writes to /etc and /proc/sys: run it as root (--dry-run works as any user)"
    command -v sysctl >/dev/null || die "sysctl not found (Debian/Ubuntu: apt-get install procps)"
fi

section "files"
install_file "$SYSCTL_FILE" 0644 "${conf%$'\n'}"
install_file "$LIMITS_FILE" 0644 "$limits"

if [[ $MODE == apply ]]; then
    sysctl -q -p "$SYSCTL_FILE"
    say "loaded $SYSCTL_FILE (sysctl -p); systemd-sysctl loads it at every boot"
else
    say "would run: sysctl -q -p $SYSCTL_FILE"
fi

# Another sysctl file that sets one of our keys and sorts after ours wins at
# boot (files are applied in name order; /etc/sysctl.conf comes last).
section "conflicting sysctl files"
conflicts=0
our_keys=()
for row in "${plan[@]}"; do our_keys+=("${row%%|*}"); done
for f in /etc/sysctl.d/*.conf /run/sysctl.d/*.conf /usr/local/lib/sysctl.d/*.conf \
    /usr/lib/sysctl.d/*.conf /lib/sysctl.d/*.conf /etc/sysctl.conf; do
    [[ -f $f && $f != "$SYSCTL_FILE" ]] || continue
    for key in "${our_keys[@]}"; do
        if grep -Eq "^[[:space:]]*-?${key//./[./]}[[:space:]]*=" "$f"; then
            warn "$f also sets $key; the file applied last (by name, /etc/sysctl.conf last of all) wins"
            conflicts=$((conflicts + 1))
        fi
    done
done
((conflicts > 0)) || say "none"

# ---------------------------------------------------------------------------
# Advice: checked, reported, never changed by this script
# ---------------------------------------------------------------------------

section "advice"

irqbalance_on=no
if command -v systemctl >/dev/null && systemctl is-active --quiet irqbalance 2>/dev/null; then
    irqbalance_on=yes
elif pgrep -x irqbalance >/dev/null 2>&1; then
    irqbalance_on=yes
fi
if [[ $irqbalance_on == yes ]]; then
    say "* irqbalance is running.  It moves IRQs every 10 s and will undo the"
    say "  pinning done by irq-affinity.sh (queue k's IRQ on shard k's core)."
    say "  Disable it:   systemctl disable --now irqbalance"
    say "  or keep it for other devices and ban the shard cores, in"
    say "  /etc/default/irqbalance:  IRQBALANCE_BANNED_CPULIST=<shard cpus>"
else
    say "* irqbalance: not running (good: it would undo irq-affinity.sh's pinning;"
    say "  if it gets installed later: systemctl disable --now irqbalance)."
fi

isolated=$(cat /sys/devices/system/cpu/isolated 2>/dev/null || true)
nohz=$(cat /sys/devices/system/cpu/nohz_full 2>/dev/null || true)
if [[ -z $isolated ]]; then
    say "* No CPUs are isolated.  For the shard cores add isolcpus=, nohz_full="
    say "  and rcu_nocbs= to the kernel command line (README.md, CPU isolation)."
else
    say "* Isolated CPUs: $isolated; nohz_full: ${nohz:-(none)}.  [shards] cpus"
    say "  should be among them, the control plane (CPUAffinity=) outside them."
fi

uring=$(sysctl_get kernel.io_uring_disabled)
if [[ -n $uring && $uring != 0 ]]; then
    say "* kernel.io_uring_disabled=$uring: Kolokol's shards need io_uring."
    say "  Either set it to 0, or keep 1 and put the service's group in"
    say "  kernel.io_uring_group (1 = only that group and CAP_SYS_ADMIN may use it)."
fi

if [[ -e /proc/sys/net/netfilter/nf_conntrack_max ]]; then
    say "* Connection tracking is loaded (nf_conntrack_max=$(sysctl_get net.netfilter.nf_conntrack_max))."
    say "  Every media flow then costs a conntrack lookup per packet and a table"
    say "  entry; a full table drops packets ('nf_conntrack: table full').  Exempt"
    say "  the media range from tracking (and keep firewall rules stateless for it):"
    say "    nft add table inet kolokol"
    say "    nft add chain inet kolokol media_in '{ type filter hook prerouting priority raw; }'"
    say "    nft add rule inet kolokol media_in udp dport $PORT_MIN-$PORT_MAX notrack"
    say "    nft add chain inet kolokol media_out '{ type filter hook output priority raw; }'"
    say "    nft add rule inet kolokol media_out udp sport $PORT_MIN-$PORT_MAX notrack"
fi

if command -v ss >/dev/null; then
    busy=$(ss -Hanu "( sport >= :$PORT_MIN and sport <= :$PORT_MAX )" 2>/dev/null | wc -l)
    busy_tcp=$(ss -Hant "( sport >= :$PORT_MIN and sport <= :$PORT_MAX )" 2>/dev/null | wc -l)
    if ((busy + busy_tcp > 0)); then
        say "* $busy UDP and $busy_tcp TCP sockets currently hold ports in $PORT_MIN-$PORT_MAX"
        say "  (ss -anu/-ant 'sport >= :$PORT_MIN and sport <= :$PORT_MAX').  Ephemeral"
        say "  ones go away as their connections close; anything listening there"
        say "  conflicts with the gateway."
    fi
fi

say "* The service's fd limit comes from LimitNOFILE= in kolokol.service, not"
say "  from limits.d.  port_mode = \"per-leg\" holds one socket per leg (two"
say "  without rtcp-mux): 10,000 calls need over 20,000 fds.  Where the limit"
say "  cannot be raised (a test host capped at 20,000) use port_mode = \"per-call\"."
say "* Next: tuning/irq-affinity.sh IFACE <shard cpus> (IRQ pinning, RSS, ntuple)."

if [[ $MODE == dry-run ]]; then
    say ""
    say "Dry run: nothing was changed.  Re-run with --apply as root to write the files."
fi
