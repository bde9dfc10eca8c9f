#!/usr/bin/env python3
"""Many concurrent SIP calls held through the Kolokol B2BUA: SIPp uac ->
Kolokol -> SIPp uas, every call with its two dialogs and its relay ports
allocated, held long enough to read the gateway's resident memory at the
plateau. Reports RSS per call = (RSS at the plateau - RSS before the first
call) / calls up.

Layout (127.0.0.1, UDP): Kolokol SIP 5260, uac 5270, uas 5290, ng 2523,
media 20000-59999 in per-call port mode (both legs of a call share one
RTP/RTCP port pair: 2 sockets per call, so 10,000 calls fit the 20,000
open-file limit per shard's fixed-file table), two shards. The scenarios
are benches/system/cps-uac.xml / cps-uas.xml (SDP offer and answer). No RTP
flows: this measures the signalling and allocation footprint; the media
timeout is raised above the hold time.

Checks, from SIPp's and the kernel's view:
  * calls up: SIPp uac's "Current calls" at the plateau, and the UDP
    sockets bound in Kolokol's media range (2 per call) from /proc/net/udp;
  * at the end: SIPp's successful and failed calls (every call must
    complete: the BYE of each held call gets its 200).

Usage: benches/system/sip_hold.py [--calls 10000] [--rate 1000]
          [--hold-s 40] [--kolokol-bin target/release/kolokol]
The last stdout line is a JSON summary.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
HOST = "127.0.0.1"
SIP, UAC, UAS, NG = 5260, 5270, 5290, 2523
MEDIA = (20000, 59999)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def media_sockets():
    n = 0
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    local = line.split()[1]
                    port = int(local.rsplit(":", 1)[1], 16)
                    if MEDIA[0] <= port <= MEDIA[1]:
                        n += 1
        except FileNotFoundError:
            pass
    return n


def sipp_current_calls(stat_csv):
    """The latest 'CurrentCall' value of a SIPp -trace_stat CSV."""
    try:
        with open(stat_csv) as f:
            lines = [l.strip() for l in f if l.strip()]
    except FileNotFoundError:
        return None
    if len(lines) < 2:
        return None
    head = lines[0].split(";")
    last = lines[-1].split(";")
    try:
        return int(last[head.index("CurrentCall")])
    except (ValueError, IndexError):
        return None


def final_counts(stat_csv):
    with open(stat_csv) as f:
        lines = [l.strip() for l in f if l.strip()]
    head = lines[0].split(";")
    last = lines[-1].split(";")
    get = lambda k: int(last[head.index(k)])
    return get("SuccessfulCall(C)"), get("FailedCall(C)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=10000)
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--hold-s", type=int, default=40)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--kolokol-bin", default=os.path.join(ROOT, "target/release/kolokol"))
    a = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="kolokol-hold-")
    cfg = os.path.join(tmp, "kolokol.toml")
    per_shard = a.calls  # B2BUA and media slots per shard, ample
    with open(cfg, "w") as f:
        f.write(
            f"""# Written by benches/system/sip_hold.py
[shards]
count = {a.shards}
cpus = []
[media]
address = "{HOST}"
port_min = {MEDIA[0]}
port_max = {MEDIA[1]}
port_mode = "per-call"
calls_max = {per_shard}
timeout_s = {a.hold_s + 120}
[ng]
listen = "{HOST}:{NG}"
[log]
level = "warn"
[sip]
udp = ["{HOST}:{SIP}"]
tcp = []
cps_max = 1000000
max_call_duration_s = {a.hold_s + 600}
[[trunks]]
name = "sipp-uas"
address = "{HOST}:{UAS}"
transport = "udp"
max_calls = 1000000
cps = 1000000
options_interval_s = 0
timeout_ms = 10000
[[routes]]
prefix = ""
to = "trunks"
[caller_id]
pool = []
"""
        )
    procs = []

    def stop_all():
        for pr in procs:
            if pr.poll() is None:
                pr.send_signal(signal.SIGTERM)
        for pr in procs:
            try:
                pr.wait(10)
            except subprocess.TimeoutExpired:
                pr.kill()

    try:
        kl = subprocess.Popen(
            [a.kolokol_bin, "run", "--config", cfg],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "kolokol.err"), "w"))
        procs.append(kl)
        time.sleep(1.0)
        if kl.poll() is not None:
            sys.exit(f"kolokol exited: {open(os.path.join(tmp, 'kolokol.err')).read()}")
        rss0 = rss_kib(kl.pid)
        sock0 = media_sockets()
        common = ["-i", HOST, "-buff_size", "8388608", "-nostdin",
                  "-default_behaviors", "all,-abortunexp", "-max_socket", "100"]
        uas = subprocess.Popen(
            ["sipp", "-sf", os.path.join(HERE, "cps-uas.xml"), "-p", str(UAS),
             "-mp", "16400"] + common,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
        procs.append(uas)
        time.sleep(0.5)
        uac_stat = os.path.join(tmp, "uac.csv")
        uac = subprocess.Popen(
            ["sipp", f"{HOST}:{SIP}", "-sf", os.path.join(HERE, "cps-uac.xml"),
             "-s", "4930123456", "-p", str(UAC), "-mp", "16300",
             "-r", str(a.rate), "-m", str(a.calls), "-l", str(a.calls + 100),
             "-d", str(a.hold_s * 1000), "-trace_stat", "-stf", uac_stat, "-fd", "1"]
            + common,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
        procs.append(uac)
        setup_s = a.calls / a.rate
        # Read the plateau between the last call set up and the first BYE.
        time.sleep(setup_s + min(10, a.hold_s / 2))
        up = sipp_current_calls(uac_stat)
        socks = media_sockets() - sock0
        rss1 = rss_kib(kl.pid)
        deadline = time.time() + setup_s + a.hold_s + 60
        while uac.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        if uac.poll() is None:
            uac.kill()
        ok, failed = final_counts(uac_stat)
        per_call = (rss1 - rss0) * 1024 / max(1, up or 0)
        res = {
            "calls": a.calls, "rate": a.rate, "hold_s": a.hold_s, "shards": a.shards,
            "calls_up_sipp": up, "media_sockets": socks,
            "rss_idle_kib": rss0, "rss_plateau_kib": rss1,
            "rss_per_call_bytes": round(per_call),
            "successful": ok, "failed": failed,
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "nproc": os.cpu_count(),
        }
        print(f"calls up {up}, media sockets {socks}, RSS {rss0} -> {rss1} KiB: "
              f"{per_call:.0f} B/call; successful {ok}, failed {failed}", file=sys.stderr)
        print(json.dumps(res))
    finally:
        stop_all()


if __name__ == "__main__":
    main()
