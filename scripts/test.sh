#!/usr/bin/env bash
# The whole test suite, as a newcomer or CI runs it: installs what the
# tests need on a fresh Debian machine, then checks formatting and lints
# and runs every test (unit, integration with real sockets, Kamailio+SIPp).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v sipp >/dev/null 2>&1 || need_pkgs+=(sip-tester)
# Kamailio's rtpengine module (rtpengine.so) ships in the kamailio package.
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need_pkgs+=(kamailio)
command -v rtpengine >/dev/null 2>&1 || need_pkgs+=(rtpengine-daemon)
# libsrtp2 (headers and library) for the SRTP interop test and bench.
[ -f /usr/include/srtp2/srtp.h ] || need_pkgs+=(libsrtp2-dev)
command -v cc >/dev/null 2>&1 || need_pkgs+=(gcc)
# The XDP relay program (bpf/relay.bpf.c, built by build.rs) and its veth
# test (tests/xdp_veth.rs): clang, libbpf's headers, iproute2, ethtool.
command -v clang >/dev/null 2>&1 || need_pkgs+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || need_pkgs+=(libbpf-dev)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v ethtool >/dev/null 2>&1 || need_pkgs+=(ethtool)
# schemathesis (PyPI) runs in a venv the API test makes (scripts/schemathesis.sh).
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
# PostgreSQL for the CDR store suite (src/cdr/store.rs starts its own
# server with initdb/pg_ctl from /usr/lib/postgresql/*/bin).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
if ((${#need_pkgs[@]})); then
  echo "== installing: ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi
# Debian starts services on install; the tests run their own instances.
for svc in kamailio rtpengine-daemon postgresql; do
  systemctl stop "$svc" >/dev/null 2>&1 || true
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== fuzz: every cargo-fuzz target, 10 s each (fuzz/README.md)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --all-targets 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo "summary: ${passed} passed, ${failed} failed"
exit "$rc"
