#!/usr/bin/env python3
"""Whole-system relay comparison: Kolokol vs rtpengine (userspace) vs the
bare io_uring forwarding loop, driven by the same `loadgen`, in the same run.

The relay under test is pinned to CPU 0 and the generator to CPU 1. The
relay's CPU comes from /proc/PID/task/*/schedstat over loadgen's measured
window (loadgen --relay-pid). Every scenario runs each relay in turn, then
repeats the round --runs times; the report is the median and the range.

Scenarios:
  efficiency  relayed packets/s per core of relay CPU at saturation
              (flat out for kolokol and bare; rtpengine overflows its receive
              queue flat out, so it gets a paced load at its known maximum)
  cpu         relay CPU at a fixed paced load (--calls, default 600)
  maxcalls    most paced calls with < 0.1% loss and p99 < 5 ms (steps)
  latency     one-way latency at a paced load (--calls)
  minwait     Kolokol's CPU and latency at --calls for several min_wait_us

Usage: benches/system/compare.py SCENARIO [--runs 3] [--calls N]
          [--relays kolokol,rtpengine,bare] [--duration 20] [--out FILE.json]
          [--loadgen-extra "ARGS"]
--loadgen-extra is passed to every loadgen call, e.g.
  --loadgen-extra "--srtp AES_CM_128_HMAC_SHA1_80"  (leg A SRTP, leg B RTP;
  ng relays only, so not with bare)
Build first: cargo build --release
"""

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release")
NG = ("127.0.0.1", 2223)
PORT_MIN, PORT_MAX = 20000, 59999
BARE_BASE = 30000
RELAY_CPU, GEN_CPU = 0, 1
LOADGEN_EXTRA = []  # --loadgen-extra, split
IDLE_WAIT = [120.0]  # --idle-wait


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def ng_ping(timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    end = time.time() + timeout
    try:
        while time.time() < end:
            try:
                s.sendto(b"p1 d7:command4:pinge", NG)
                if b"pong" in s.recv(1000):
                    return True
            except OSError:
                time.sleep(0.1)
        return False
    finally:
        s.close()


def cpu_times():
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def wait_host_idle(max_wait=120.0, busy_max=0.10):
    """Wait (up to max_wait s) until the host is idle over 1 s: other
    people's compiles or fuzzers on the relay's or generator's core make
    CPU figures meaningless. Returns the busy share last seen."""
    end = time.time() + max_wait
    while True:
        b0, t0 = cpu_times()
        time.sleep(1.0)
        b1, t1 = cpu_times()
        busy = (b1 - b0) / max(t1 - t0, 1)
        if busy <= busy_max or time.time() >= end:
            if busy > busy_max:
                log(f"host still {busy:.0%} busy after {max_wait:.0f} s; measuring anyway")
            return busy
        log(f"host {busy:.0%} busy (not ours); waiting")


def wait_port_free(port, proto=socket.SOCK_DGRAM, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        s = socket.socket(socket.AF_INET, proto)
        try:
            s.bind(("127.0.0.1", port))
            return
        except OSError:
            time.sleep(0.2)
        finally:
            s.close()
    raise SystemExit(f"port {port} stays busy: another process holds it")


class Relay:
    """A relay process started by PID and stopped by PID."""

    def __init__(self, kind, calls, min_wait=None, port_mode="per-leg"):
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix=f"cmp-{kind}-")
        self.log = open(os.path.join(self.dir, "relay.log"), "w")
        wait_port_free(NG[1])
        if kind == "kolokol":
            cfg = os.path.join(self.dir, "k.toml")
            with open(cfg, "w") as f:
                f.write(
                    f"[shards]\ncount = 1\ncpus = [{RELAY_CPU}]\n"
                    + (f"min_wait_us = {min_wait}\n" if min_wait is not None else "")
                    + f'[media]\naddress = "127.0.0.1"\nport_min = {PORT_MIN}\n'
                    f"port_max = {PORT_MAX}\ntimeout_s = 600\ncalls_max = 16000\n"
                    f'port_mode = "{port_mode}"\n'
                    '[sip]\nenabled = false\n'
                    f'[ng]\nlisten = "{NG[0]}:{NG[1]}"\n'
                )
            cmd = [os.path.join(BIN, "kolokol"), "run", "--config", cfg]
        elif kind == "rtpengine":
            cfg = os.path.join(self.dir, "rtpengine.conf")
            with open(cfg, "w") as f:
                f.write(
                    "[rtpengine]\ntable = -1\ninterface = 127.0.0.1\n"
                    f"listen-ng = {NG[0]}:{NG[1]}\nport-min = {PORT_MIN}\n"
                    f"port-max = {PORT_MAX}\nnum-threads = 1\ndelete-delay = 0\n"
                    "endpoint-learning = off\nforeground = true\nlog-stderr = true\n"
                    "log-level = 4\n"
                )
            cmd = ["taskset", "-c", str(RELAY_CPU), "rtpengine", f"--config-file={cfg}"]
        elif kind == "bare":
            args = [
                os.path.join(BIN, "bare_relay"),
                "--addr", "127.0.0.1",
                "--base-port", str(BARE_BASE),
                "--pairs", str(calls),
                "--cpu", str(RELAY_CPU),
                "--mode", "uring",
            ]
            if min_wait is not None:
                args += ["--min-wait-us", str(min_wait)]
            cmd = args
        else:
            raise SystemExit(f"unknown relay {kind}")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        if kind == "bare":
            time.sleep(0.5 + calls / 5000)
        elif not ng_ping():
            self.stop()
            raise SystemExit(f"{kind} did not answer ng ping; log in {self.dir}")
        if self.proc.poll() is not None:
            raise SystemExit(f"{kind} exited at start; log in {self.dir}")

    @property
    def pid(self):
        return self.proc.pid

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def loadgen(relay, calls, duration, flat=False, pps=50, warmup=2, extra=()):
    out = os.path.join(relay.dir, f"lg-{calls}-{int(time.time()*1000)}.json")
    cmd = [
        os.path.join(BIN, "loadgen"),
        "--calls", str(calls),
        "--duration-s", str(duration),
        "--warmup-s", str(warmup),
        "--cpu", str(GEN_CPU),
        "--rt-prio", "10",
        "--relay-pid", str(relay.pid),
        "--json", out,
        "--quiet",
    ]
    if relay.kind == "bare":
        cmd += ["--bare-base-port", str(BARE_BASE)]
    else:
        cmd += ["--ng", f"{NG[0]}:{NG[1]}"]
    cmd += ["--flat"] if flat else ["--pps", str(pps)]
    cmd += list(extra) + LOADGEN_EXTRA
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode not in (0,) or not os.path.exists(out):
        log(f"loadgen failed ({r.returncode}): {r.stderr[-2000:]}")
        return None
    with open(out) as f:
        return json.load(f)


def summary(j):
    if j is None:
        return None
    return {
        "calls": j["calls_active"],
        "relayed_pps": j["relayed_pps"],
        "loss_pct": j["loss_pct"],
        "p50_us": j["latency_us"]["p50"],
        "p99_us": j["latency_us"]["p99"],
        "p999_us": j["latency_us"]["p999"],
        "relay_cpu_pct": j["relay"]["cpu_pct"],
        "pps_per_core": j["relay"]["relayed_pps_per_core"],
        "gen_cpu_pct": j["generator"]["cpu_pct"],
        "gen_kept_schedule": j["generator"]["kept_schedule"],
        "gen_problems": j["generator"]["schedule_problems"],
        "udp_rcvbuf_errors": j["system_udp_rcvbuf_errors"],
        "srtp": j.get("srtp"),
        "srtp_errors": j.get("srtp_errors", 0),
    }


def med(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def run_one(kind, calls, duration, flat, min_wait=None, port_mode="per-leg"):
    idle_before = wait_host_idle(IDLE_WAIT[0])
    r = Relay(kind, calls, min_wait=min_wait, port_mode=port_mode)
    try:
        b0, t0 = cpu_times()
        j = loadgen(r, calls, duration, flat=flat)
        b1, t1 = cpu_times()
        s = summary(j)
        if s is not None:
            # All CPUs' busy share during the run (relay + generator + anything
            # else); with 2 CPUs, relay_cpu + gen_cpu ~ 2 x this on a quiet host.
            s["host_busy_pct_before"] = round(idle_before * 100, 1)
            s["host_busy_pct"] = round((b1 - b0) / max(t1 - t0, 1) * 100, 1)
        return s
    finally:
        r.stop()


def scenario_efficiency(a):
    res = {}
    for i in range(a.runs):
        for kind in a.relays:
            if kind == "rtpengine":
                # Flat out rtpengine drops at its receive queue while idle;
                # its saturation point is its paced maximum (~875 calls).
                s = run_one(kind, a.rtpengine_calls, a.duration, flat=False)
            else:
                s = run_one(kind, a.flat_calls, a.duration, flat=True)
            log(f"efficiency run {i} {kind}: {s and s['pps_per_core']} pkt/s/core "
                f"cpu {s and s['relay_cpu_pct']}% loss {s and s['loss_pct']}% "
                f"gen {s and s['gen_cpu_pct']}% srtp_errors {s and s['srtp_errors']}")
            res.setdefault(kind, []).append(s)
    return res


def scenario_fixed(a, key="cpu"):
    res = {}
    for i in range(a.runs):
        for kind in a.relays:
            s = run_one(kind, a.calls, a.duration, flat=False)
            log(f"{key} run {i} {kind}: cpu {s and s['relay_cpu_pct']}% loss "
                f"{s and s['loss_pct']}% p50 {s and s['p50_us']} p99 {s and s['p99_us']} "
                f"gen {s and s['gen_cpu_pct']}% kept {s and s['gen_kept_schedule']} "
                f"srtp_errors {s and s['srtp_errors']}")
            res.setdefault(kind, []).append(s)
    return res


def scenario_minwait(a):
    res = {}
    for i in range(a.runs):
        for mw in a.min_waits:
            s = run_one("kolokol", a.calls, a.duration, flat=False, min_wait=mw)
            log(f"minwait {mw} run {i}: cpu {s and s['relay_cpu_pct']}% p50 "
                f"{s and s['p50_us']} p99 {s and s['p99_us']} loss {s and s['loss_pct']}")
            res.setdefault(f"kolokol min_wait_us={mw}", []).append(s)
    return res


def scenario_maxcalls(a):
    res = {}
    for i in range(a.runs):
        for kind in a.relays:
            steps = a.steps_rtpengine if kind == "rtpengine" else a.steps
            best = None
            trail = []
            for n in steps:
                s = run_one(kind, n, a.duration, flat=False)
                ok = s is not None and s["loss_pct"] < 0.1 and s["p99_us"] < 5000
                trail.append({"calls": n, "ok": ok, **(s or {})})
                log(f"maxcalls run {i} {kind} {n}: ok={ok} loss {s and s['loss_pct']} "
                    f"p99 {s and s['p99_us']} cpu {s and s['relay_cpu_pct']} "
                    f"gen {s and s['gen_cpu_pct']} kept {s and s['gen_kept_schedule']}")
                if ok:
                    best = n
                else:
                    break
            res.setdefault(kind, []).append({"max_calls": best, "steps": trail})
    return res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["efficiency", "cpu", "maxcalls", "latency", "minwait"])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--calls", type=int, default=600)
    p.add_argument("--flat-calls", type=int, default=100)
    p.add_argument("--rtpengine-calls", type=int, default=875)
    p.add_argument("--duration", type=int, default=15)
    p.add_argument("--relays", default="kolokol,rtpengine,bare")
    p.add_argument("--steps", default="800,1000,1200,1400,1600,1800,2000")
    p.add_argument("--steps-rtpengine", default="700,800,875,950,1000,1100")
    p.add_argument("--min-waits", default="0,50,200,500")
    p.add_argument("--out")
    p.add_argument("--loadgen-extra", default="",
                   help='extra loadgen arguments for every run, e.g. "--srtp AES_CM_128_HMAC_SHA1_80"')
    p.add_argument("--idle-wait", type=float, default=120.0,
                   help="before each run wait up to this many s for the host to be idle")
    a = p.parse_args()
    LOADGEN_EXTRA[:] = shlex.split(a.loadgen_extra)
    IDLE_WAIT[0] = a.idle_wait
    a.relays = a.relays.split(",")
    a.steps = [int(x) for x in a.steps.split(",")]
    a.steps_rtpengine = [int(x) for x in a.steps_rtpengine.split(",")]
    a.min_waits = [int(x) for x in a.min_waits.split(",")]
    for b in ("kolokol", "loadgen", "bare_relay"):
        if not os.access(os.path.join(BIN, b), os.X_OK):
            raise SystemExit(f"build first: cargo build --release ({b} missing)")
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    if a.scenario == "efficiency":
        res = scenario_efficiency(a)
    elif a.scenario in ("cpu", "latency"):
        res = scenario_fixed(a, a.scenario)
    elif a.scenario == "minwait":
        res = scenario_minwait(a)
    else:
        res = scenario_maxcalls(a)
    report = {"scenario": a.scenario, "started": started, "args": vars(a), "results": res}
    if a.scenario == "maxcalls":
        report["median"] = {k: med([r["max_calls"] for r in v]) for k, v in res.items()}
    else:
        report["median"] = {
            k: {f: med([r[f] if r else None for r in v])
                for f in ("relay_cpu_pct", "pps_per_core", "relayed_pps", "loss_pct",
                          "p50_us", "p99_us", "gen_cpu_pct", "srtp_errors")}
            for k, v in res.items()
        }
    text = json.dumps(report, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(json.dumps(report["median"], indent=1))


if __name__ == "__main__":
    main()
