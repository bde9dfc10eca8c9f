#!/usr/bin/env python3
"""10,000 concurrent calls on one shard: allocation, loss at a low per-call
rate, resident memory per call, and growth over a long run.

Kolokol runs pinned to CPU 0 with the 20,000-open-file limit of the test
host; loadgen (CPU 1) sets up --calls calls over ng with rtcp-mux and sends
--pps packets/s per leg per direction for --duration seconds. The gateway's
RSS is sampled before any call (baseline), right after set-up, and every
--sample seconds after; growth is the last sample minus the first sample
taken after warm-up.

Usage: benches/system/tenk.py [--calls 10000] [--pps 5] [--duration 600]
          [--port-mode per-leg|per-call] [--out FILE.json]
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import compare  # noqa: E402


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=10000)
    p.add_argument("--pps", type=int, default=5)
    p.add_argument("--duration", type=int, default=600)
    p.add_argument("--sample", type=int, default=30)
    p.add_argument("--port-mode", default="per-leg")
    p.add_argument("--out")
    a = p.parse_args()
    relay = compare.Relay("kolokol", a.calls, port_mode=a.port_mode)
    samples = []
    try:
        time.sleep(1)
        base = relay.rss_kib()
        compare.log(f"baseline RSS {base} KiB, fds {fds(relay.pid)}")
        out = os.path.join(relay.dir, "lg.json")
        cmd = [
            os.path.join(compare.BIN, "loadgen"),
            "--ng", "127.0.0.1:2223",
            "--calls", str(a.calls),
            "--pps", str(a.pps),
            "--duration-s", str(a.duration),
            "--warmup-s", "5",
            "--rtcp-mux",
            "--cpu", str(compare.GEN_CPU),
            "--rt-prio", "10",
            "--relay-pid", str(relay.pid),
            "--ng-window", "256",
            "--json", out,
            "--quiet",
        ]
        t0 = time.time()
        lg = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stop = threading.Event()

        def sampler():
            while not stop.wait(a.sample if samples else 10):
                s = {
                    "t_s": round(time.time() - t0, 1),
                    "rss_kib": relay.rss_kib(),
                    "fds": fds(relay.pid),
                }
                samples.append(s)
                compare.log(f"t={s['t_s']}s RSS {s['rss_kib']} KiB fds {s['fds']}")

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        _, err = lg.communicate()
        stop.set()
        th.join()
        if lg.returncode != 0 or not os.path.exists(out):
            raise SystemExit(f"loadgen failed ({lg.returncode}): {err[-3000:]}")
        with open(out) as f:
            j = json.load(f)
    finally:
        relay.stop()
    loaded = samples[0]["rss_kib"] if samples else base
    steady = [s["rss_kib"] for s in samples[1:]]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "calls": j["calls_active"],
        "setup_failures": j["setup_failures"],
        "first_setup_error": j["first_setup_error"],
        "pps_per_leg_dir": a.pps,
        "port_mode": a.port_mode,
        "duration_s": a.duration,
        "sent": j["sent"],
        "received": j["received"],
        "loss_pct": j["loss_pct"],
        "latency_us": j["latency_us"],
        "relay_cpu_pct": j["relay"]["cpu_pct"],
        "baseline_rss_kib": base,
        "rss_after_setup_kib": loaded,
        "rss_delta_per_call_bytes": round((loaded - base) * 1024 / max(1, j["calls_active"])),
        "rss_first_steady_kib": steady[0] if steady else None,
        "rss_last_kib": steady[-1] if steady else None,
        "rss_growth_kib": (steady[-1] - steady[0]) if len(steady) > 1 else None,
        "samples": samples,
        "generator": j["generator"],
    }
    text = json.dumps(report, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(json.dumps({k: v for k, v in report.items() if k not in ("samples", "generator")},
                     indent=1))


if __name__ == "__main__":
    main()
