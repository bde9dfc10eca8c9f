#!/usr/bin/env bash
# Run one pending B2BUA scenario by hand: kolokol between a SIPp caller and
# a SIPp trunk, all on 127.0.0.1.  See README.md.
#
#   tests/sipp/b2bua/pending/run.sh auth|hold|prack|timer|trying
#
# Environment: KOLOKOL (binary; default target/debug/kolokol under
# $CARGO_TARGET_DIR or ./target), BASE (first of 8 UDP ports; default
# 17400), MEDIA (first of 64 relay ports; default 17500), OUT (directory for
# the config, logs and SIPp traces; default a new mktemp -d).
set -u
case "${1:-}" in
  auth)  uas=uas_auth_407.xml;       uac=../uac_call.xml;       trunk_extra='username = "kolokol"
password = "secret"' ;;
  hold)  uas=uas_reinvite_hold.xml;  uac=uac_reinvite_hold.xml; trunk_extra='' ;;
  prack) uas=uas_prack.xml;          uac=../uac_call.xml;       trunk_extra='require_100rel = true' ;;
  timer) uas=uas_session_timer.xml;  uac=uac_session_timer.xml; trunk_extra='' ;;
  trying) uas=uas_trying_then_answer.xml; uac=../uac_call.xml;  trunk_extra='' ;;
  *) echo "usage: $0 auth|hold|prack|timer|trying" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../../.." && pwd)
kolokol=${KOLOKOL:-${CARGO_TARGET_DIR:-$repo/target}/debug/kolokol}
base=${BASE:-17400}; media=${MEDIA:-17500}
out=${OUT:-$(mktemp -d /tmp/kolokol-pending-XXXXXX)}
sip=$base; ng=$((base+1)); uac_port=$((base+2)); trunk=$((base+3)); trunk2=$((base+4))
second_trunk=''
if [ "$1" = trying ]; then
  # A second trunk that answers, to fail over to after 1.5 s.
  TIMEOUT_MS=1500
  second_trunk="[[trunks]]
name = \"t2\"
address = \"127.0.0.1:$trunk2\"
transport = \"udp\"
priority = 20
options_interval_s = 0"
fi
cat > "$out/kolokol.toml" <<CFG
[shards]
count = 1
cpus = []
[media]
address = "127.0.0.1"
port_min = $media
port_max = $((media+63))
dscp = 0
[ng]
listen = "127.0.0.1:$ng"
[sip]
udp = ["127.0.0.1:$sip"]
tcp = []
[[trunks]]
name = "t1"
address = "127.0.0.1:$trunk"
transport = "udp"
priority = 10
options_interval_s = 0
timeout_ms = ${TIMEOUT_MS:-3000}
$trunk_extra
$second_trunk
[[routes]]
prefix = ""
to = "trunks"
CFG
head -c $((160*150)) /dev/zero | tr '\0' '\377' > "$out/g711u.raw"
cd "$out"
"$kolokol" run --config kolokol.toml > kolokol.out 2> kolokol.err &
kpid=$!
sleep 1
sipp -sf "$here/$uas" -i 127.0.0.1 -p $trunk -mi 127.0.0.3 -mp $((base+8)) -rtp_echo -m 1 \
  -nostdin -trace_msg -message_file trunk_msg.log -trace_logs -log_file trunk_logs.log \
  -trace_err -error_file trunk_errors.log -timeout 20s -timeout_error > trunk.out 2>&1 &
spid=$!
s2pid=
if [ -n "$second_trunk" ]; then
  sipp -sf "$here/../uas_answer.xml" -i 127.0.0.1 -p $trunk2 -mi 127.0.0.4 -mp $((base+12)) -rtp_echo -m 1 \
    -nostdin -trace_msg -message_file trunk2_msg.log -trace_logs -log_file trunk2_logs.log \
    -trace_err -error_file trunk2_errors.log -timeout 20s -timeout_error > trunk2.out 2>&1 &
  s2pid=$!
fi
sleep 0.5
sipp 127.0.0.1:$sip -sf "$here/$uac" -s 4930123456 -i 127.0.0.1 -p $uac_port \
  -mi 127.0.0.2 -mp $((base+16)) -d ${HOLD_MS:-1000} -m 1 -recv_timeout 10000 \
  -nostdin -trace_msg -message_file caller_msg.log -trace_logs -log_file caller_logs.log \
  -trace_err -error_file caller_errors.log -timeout 20s -timeout_error > caller.out 2>&1
crc=$?
wait $spid; trc=$?
[ -n "$s2pid" ] && wait $s2pid
sleep "${SETTLE_S:-0}"   # see README: counters printed at stop lag by one tick
kill -TERM $kpid; wait $kpid
echo "caller exit $crc, trunk exit $trc (0 = call successful); files in $out"
cat caller_logs.log trunk_logs.log trunk2_logs.log 2>/dev/null
tail -1 kolokol.err
[ $crc = 0 ] && [ $trc = 0 ]
