#!/usr/bin/env python3
"""Whole-system SIP calls-per-second: the most new calls per second a SIP
element carries with < 0.1% failed calls, SIPp uac -> ELEMENT -> SIPp uas
on one host, short calls (1 s hold).

Elements:
  kamailio  Kamailio 5.6 as a stateful record-routing proxy
            (benches/system/kamailio-proxy.cfg, the anchor of ANCHORS.md),
            started as `kamailio -f CFG -DD -E -m 512 -M 16 -x tlsf`.
            The uac sends to it with -rsa; the Request-URI is the uas.
  kolokol   target/release/kolokol (B2BUA) with a config this script writes
            to its temp dir: SIP on 127.0.0.1:5060/udp, one trunk at the
            uas, route "" -> trunks, one shard on CPU 0, limits raised.
            The uac sends straight to it.

Layout (all 127.0.0.1, UDP): element 5060, uac 5070, uas 5090; SIPp media
ports 16000 (uac) and 16100 (uas) are bound but no RTP flows. The element
is pinned to CPU 0, both SIPp processes to CPU 1 (taskset). Every trial
starts fresh processes, waits for the ports to be free first (fails loudly
after --port-wait s), bounds every process in time and stops each by PID.

A trial at rate R places N = R * --duration calls (`-r R -m N -d 1000`)
with the scenarios cps-uac.xml / cps-uas.xml (SDP offer and answer,
Record-Route honoured when present). It passes when
  failed / N < --max-fail (0.001), failed = N - SuccessfulCall of the uac
  (calls SIPp counted failed, never created or still open at the end), and
  the achieved creation rate (N over the time the uac took to create them,
  from its 1 s -trace_stat samples) is within --rate-tol (5%) of R.
Search: from --start step up by --step while trials pass (a failing step
is retried --retries times), then bisect between the last pass and the
first failure down to --resolution. If --start fails, step down instead.
Each run repeats the whole search; the result is the median over --runs.

Also recorded per trial: CPU of the element (all its processes/threads)
and of the two SIPp processes, from /proc/PID/task/*/schedstat over the
call-creation window, as a fraction of one core. On 2 cores SIPp's core
can saturate before the element's: compare those figures before reading
the maximum as the element's.

Usage: benches/system/sip_cps.py ELEMENT [--runs 3] [--start 1000]
          [--step 250] [--resolution 50] [--max-rate 20000] [--duration 10]
          [--hold-ms 1000] [--kolokol-bin PATH] [--port-mode per-leg]
          [--out FILE.json] [--keep]
Progress goes to stderr; the last stdout line is a JSON summary.
"""

import argparse
import errno
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
HOST = "127.0.0.1"
ELEMENT_PORT, UAC_PORT, UAS_PORT = 5060, 5070, 5090
UAC_MEDIA, UAS_MEDIA = 16000, 16100
KOLOKOL_NG_PORT = 22230  # not 2223: keep clear of rtpengine/compare.py runs
ELEMENT_CPU, SIPP_CPU = 0, 1
BUFF_SIZE = 4194304
SERVICE = "4930123456"  # called number: digits, Kolokol routes by prefix


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- ports


def udp_port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((HOST, port))
        return True
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return False
        raise
    finally:
        s.close()


def wait_ports_free(ports, timeout):
    end = time.time() + timeout
    busy = [p for p in ports if not udp_port_free(p)]
    if busy:
        log(f"  waiting for UDP ports {busy} to be free")
    while busy:
        if time.time() > end:
            raise SystemExit(
                f"UDP ports {busy} on {HOST} still busy after {timeout:.0f} s; "
                "another process holds them (ss -ulpn)"
            )
        time.sleep(0.5)
        busy = [p for p in busy if not udp_port_free(p)]


def udp_inodes(port):
    """Socket inodes of UDP (v4 and v6) sockets bound to port."""
    out = set()
    for fn in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(fn) as f:
                next(f)
                for ln in f:
                    v = ln.split()
                    if int(v[1].rsplit(":", 1)[1], 16) == port:
                        out.add(v[9])
        except OSError:
            pass
    return out


def udp_drops(port):
    """Datagrams dropped (receive buffer full) by the sockets on port, from
    the last column of /proc/net/udp; our sockets are new every trial."""
    tot = 0
    for fn in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(fn) as f:
                next(f)
                for ln in f:
                    v = ln.split()
                    if int(v[1].rsplit(":", 1)[1], 16) == port:
                        tot += int(v[-1])
        except OSError:
            pass
    return tot


def owns_udp_port(pid, port):
    """Whether pid or one of its descendants holds a UDP socket on port:
    on a shared host another session may bind the same port between our
    free-check and our start, and a bound port alone proves nothing."""
    inodes = udp_inodes(port)
    if not inodes:
        return False
    for p in tree_pids(pid):
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    link = os.readlink(f"/proc/{p}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return True
        except OSError:
            pass
    return False


def wait_port_bound(proc, port, timeout, what):
    """Wait until proc (or a child) has bound UDP port; fail loudly."""
    end = time.time() + timeout
    while not owns_udp_port(proc.pid, port):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited (rc {proc.returncode}) before binding {port}")
        if time.time() > end:
            other = "" if udp_port_free(port) else " (another process holds it)"
            raise RuntimeError(
                f"{what} did not bind UDP {HOST}:{port} within {timeout:.0f} s{other}"
            )
        time.sleep(0.1)


def sip_options_ping(port, timeout):
    """Any SIP response to an OPTIONS within timeout s."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    lport = s.getsockname()[1]
    s.settimeout(0.3)
    end = time.time() + timeout
    n = 0
    try:
        while time.time() < end:
            n += 1
            msg = (
                f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {HOST}:{lport};branch=z9hG4bKcpsping{n}\r\n"
                f"From: <sip:ping@{HOST}:{lport}>;tag=cpsping\r\n"
                f"To: <sip:{HOST}:{port}>\r\n"
                f"Call-ID: cpsping-{os.getpid()}@{HOST}\r\n"
                f"CSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            s.sendto(msg.encode(), (HOST, port))
            try:
                data = s.recv(65535)
                if data.startswith(b"SIP/2.0 "):
                    return True
            except socket.timeout:
                pass
        return False
    finally:
        s.close()


# ---------------------------------------------------------------- CPU


def tree_pids(pid):
    """pid and all its descendants (via /proc/*/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def cpu_ns(pids):
    tot = 0
    for p in pids:
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    tot += int(f.read().split()[0])
        except OSError:
            pass
    return tot


def cpu_busy_ticks():
    """Busy USER_HZ ticks per CPU from /proc/stat (everything but idle and
    iowait), to see what else ran on the element's and SIPp's cores."""
    out = {}
    with open("/proc/stat") as f:
        for ln in f:
            if ln.startswith("cpu") and ln[3].isdigit():
                v = [int(x) for x in ln.split()[1:]]
                out[int(ln.split()[0][3:])] = sum(v[:8]) - v[3] - v[4]
    return out


# ---------------------------------------------------------------- processes


NICE = [0]  # --nice: added to the niceness of the element and both SIPp


class Proc:
    """A process started by us, stopped by its PID (and its children's)."""

    def __init__(self, name, cmd, cwd, preexec=None):
        self.name = name
        if NICE[0]:
            cmd = ["nice", "-n", str(NICE[0])] + cmd
        self.out = open(os.path.join(cwd, f"{name}.out"), "w")
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self.out,
            stderr=subprocess.STDOUT, preexec_fn=preexec,
        )
        self.pid = self.proc.pid
        self.cmd = cmd

    def alive(self):
        return self.proc.poll() is None

    def stop(self, grace=5.0):
        kids = [p for p in tree_pids(self.pid) if p != self.pid]
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"  {self.name} ({self.pid}) ignored SIGTERM; SIGKILL")
                self.proc.kill()
                self.proc.wait()
        # Kamailio's main process takes its children down; make sure.
        for k in kids:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(k, sig)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
        self.out.close()


NOFILE = 262144


def raise_nofile():
    """Kolokol's per-leg media mode holds 4 sockets per call (RTP + RTCP per
    leg): at a few thousand CPS x 1 s hold that passes the host's 20,000
    file limit, which would measure the limit, not SIP. Root may raise it
    for this process; otherwise take the hard limit."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------- elements


def kolokol_config(path, calls_max, port_mode):
    with open(path, "w") as f:
        f.write(
            f"""# Written by benches/system/sip_cps.py
[shards]
count = 1
cpus = [{ELEMENT_CPU}]

[media]
address = "{HOST}"
port_min = 20000
port_max = 59999
port_mode = "{port_mode}"
calls_max = {calls_max}

[ng]
listen = "{HOST}:{KOLOKOL_NG_PORT}"

[log]
level = "warn"

[sip]
udp = ["{HOST}:{ELEMENT_PORT}"]
tcp = []
cps_max = 1000000

[[trunks]]
name = "sipp-uas"
address = "{HOST}:{UAS_PORT}"
transport = "udp"
max_calls = 1000000
cps = 1000000
# No OPTIONS probes: the SIPp uas scenario only takes INVITEs.
options_interval_s = 0

[[routes]]
prefix = ""
to = "trunks"

[caller_id]
# Pass the caller's identity through.
pool = []
"""
        )


def start_element(a, d, procs):
    """Start the element pinned to ELEMENT_CPU (added to procs at once, so
    it is stopped even if it never gets ready); return its Proc."""
    if a.element == "kamailio":
        cfg = os.path.join(HERE, "kamailio-proxy.cfg")
        cmd = ["taskset", "-c", str(ELEMENT_CPU), "kamailio", "-f", cfg,
               "-DD", "-E", "-m", "512", "-M", "16", "-x", "tlsf"]
        p = Proc("element", cmd, d)
        procs.append(p)
        wait_port_bound(p.proc, ELEMENT_PORT, 15, "kamailio")
        time.sleep(1.0)  # children forked after the bind
        if not p.alive():
            raise RuntimeError("kamailio exited at start; see element.out")
        return p
    cfg = os.path.join(d, "kolokol.toml")
    kolokol_config(cfg, a.calls_max, a.port_mode)
    cmd = ["taskset", "-c", str(ELEMENT_CPU), a.kolokol_bin, "run", "--config", cfg]
    p = Proc("element", cmd, d, preexec=raise_nofile)
    procs.append(p)
    wait_port_bound(p.proc, ELEMENT_PORT, 15, "kolokol")
    if not sip_options_ping(ELEMENT_PORT, 10):
        raise SystemExit(
            f"kolokol bound {HOST}:{ELEMENT_PORT} but did not answer SIP OPTIONS "
            f"within 10 s; see {d}/element.out"
        )
    return p


# ---------------------------------------------------------------- SIPp


def sipp_common(stat_file, err_file):
    return [
        "-i", HOST,
        "-buff_size", str(BUFF_SIZE),
        "-default_behaviors", "all,-abortunexp",
        "-nostdin",
        "-trace_stat", "-stf", stat_file, "-fd", "1",
        "-trace_screen",
        "-trace_err", "-error_file", err_file, "-max_log_size", "10000000",
    ]


def read_stat(path):
    """SIPp -trace_stat CSV -> list of dicts (one per sample)."""
    try:
        with open(path) as f:
            lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    except OSError:
        return []
    if len(lines) < 2:
        return []
    head = lines[0].rstrip(";").split(";")
    rows = []
    for ln in lines[1:]:
        vals = ln.rstrip(";").split(";")
        if len(vals) < len(head):
            continue
        rows.append(dict(zip(head, vals)))
    return rows


def epoch(v):
    # "2026-11-26\t17:17:49.946062\t1795713469.946062"
    return float(v.split("\t")[-1])


def num(row, key):
    try:
        return int(float(row.get(key, "0")))
    except ValueError:
        return 0


def achieved_rate(rows, n):
    """n / time the uac took to create n calls (interpolated between the
    1 s samples); None if it never created them all."""
    if not rows:
        return None
    t0 = epoch(rows[0]["StartTime"])
    prev_t, prev_c = t0, 0
    for r in rows:
        t, c = epoch(r["CurrentTime"]), num(r, "TotalCallCreated")
        if c >= n:
            if c == prev_c:
                tn = t
            else:
                tn = prev_t + (t - prev_t) * (n - prev_c) / (c - prev_c)
            return n / max(tn - t0, 1e-6)
        prev_t, prev_c = t, c
    return None


def trial(a, rate, idx):
    n = int(round(rate * a.duration))
    d = tempfile.mkdtemp(prefix=f"cps-{a.element}-{rate}-", dir=a.workdir)
    ports = [ELEMENT_PORT, UAC_PORT, UAS_PORT, UAC_MEDIA, UAC_MEDIA + 2,
             UAS_MEDIA, UAS_MEDIA + 2]
    if a.element == "kolokol":
        ports.append(KOLOKOL_NG_PORT)
    wait_ports_free(ports, a.port_wait)
    procs = []
    res = {"rate": rate, "calls": n, "dir": d}
    try:
        uas = Proc("uas", [
            "taskset", "-c", str(SIPP_CPU), "sipp",
            "-sf", os.path.join(HERE, "cps-uas.xml"),
            "-p", str(UAS_PORT), "-mp", str(UAS_MEDIA),
        ] + sipp_common("uas.csv", "uas-err.log"), d)
        procs.append(uas)
        wait_port_bound(uas.proc, UAS_PORT, 10, "sipp uas")

        el = start_element(a, d, procs)

        if a.element == "kamailio":
            # Request-URI = the uas; packets to the proxy.
            target = [f"{HOST}:{UAS_PORT}", "-rsa", f"{HOST}:{ELEMENT_PORT}"]
        else:
            target = [f"{HOST}:{ELEMENT_PORT}"]
        uac_cmd = [
            "taskset", "-c", str(SIPP_CPU), "sipp", *target,
            "-sf", os.path.join(HERE, "cps-uac.xml"),
            "-s", SERVICE,
            "-p", str(UAC_PORT), "-mp", str(UAC_MEDIA),
            "-r", str(rate), "-rp", "1000", "-m", str(n),
            "-d", str(a.hold_ms),
            # A call whose 200 never comes after a 180 (INVITE retransmission
            # stops at a provisional) would wait forever: fail it after
            # 64*T1 like Timer B, so the uac ends on its own.
            "-recv_timeout", "32000",
        ] + sipp_common("uac.csv", "uac-err.log")
        el_pids = tree_pids(el.pid)
        t_start = time.time()
        uac = Proc("uac", uac_cmd, d)
        procs.append(uac)
        sipp_pids = [uac.pid, uas.pid]
        c0_el, c0_sipp = cpu_ns(el_pids), cpu_ns(sipp_pids)
        b0 = cpu_busy_ticks()

        # CPU over the creation window (n / rate seconds).
        window = n / rate
        time.sleep(window)
        c1_el, c1_sipp = cpu_ns(el_pids), cpu_ns(sipp_pids)
        b1 = cpu_busy_ticks()
        wall = time.time() - t_start
        hz = os.sysconf("SC_CLK_TCK")
        res["element_cpu"] = round((c1_el - c0_el) / 1e9 / wall, 3)
        res["sipp_cpu"] = round((c1_sipp - c0_sipp) / 1e9 / wall, 3)
        # Whole-core busy fraction (ticks): above element_cpu / sipp_cpu
        # means other processes shared the core.
        res["core_busy"] = {
            str(c): round((b1[c] - b0[c]) / hz / wall, 2)
            for c in (ELEMENT_CPU, SIPP_CPU) if c in b0 and c in b1
        }
        res["loadavg1"] = float(open("/proc/loadavg").read().split()[0])

        # The uac exits when all n calls are done; a call that never gets
        # an answer fails after SIPp's retransmissions or -recv_timeout
        # (32 s).
        deadline = t_start + window + a.hold_ms / 1000 + a.trial_timeout
        while uac.alive() and time.time() < deadline:
            time.sleep(0.2)
        res["timed_out"] = uac.alive()
        if res["timed_out"]:
            log(f"  uac still running {a.trial_timeout} s after the last call; stopping it")
        res["element_alive"] = el.alive()
        res["udp_drops"] = {
            "element": udp_drops(ELEMENT_PORT),
            "uac": udp_drops(UAC_PORT),
            "uas": udp_drops(UAS_PORT),
        }
    finally:
        for p in reversed(procs):
            p.stop()

    rows = read_stat(os.path.join(d, "uac.csv"))
    last = rows[-1] if rows else {}
    ok = num(last, "SuccessfulCall(C)")
    res["created"] = num(last, "TotalCallCreated")
    res["successful"] = ok
    res["sipp_failed"] = num(last, "FailedCall(C)")
    res["failed"] = n - ok
    res["fail_ratio"] = round((n - ok) / n, 6)
    ach = achieved_rate(rows, n)
    res["achieved_rate"] = round(ach, 1) if ach else 0.0
    res["retransmissions"] = num(last, "Retransmissions(C)")
    res["fail_detail"] = {
        k: num(last, k) for k in last
        if k.startswith("Failed") and k.endswith("(C)") and k != "FailedCall(C)"
        and num(last, k)
    }
    urows = read_stat(os.path.join(d, "uas.csv"))
    ulast = urows[-1] if urows else {}
    res["uas_successful"] = num(ulast, "SuccessfulCall(C)")
    res["uas_failed"] = num(ulast, "FailedCall(C)")
    res["passed"] = bool(
        rows
        and res["fail_ratio"] < a.max_fail
        and res["achieved_rate"] >= rate * (1 - a.rate_tol)
        and not res["timed_out"]
    )
    log(
        f"  [{idx}] rate {rate}: {ok}/{n} ok, failed {res['failed']} "
        f"({100 * res['fail_ratio']:.3f}%), achieved {res['achieved_rate']}/s, "
        f"cpu element {res['element_cpu']:.2f} sipp {res['sipp_cpu']:.2f} "
        f"(cores busy {res.get('core_busy')}, load {res.get('loadavg1')}), "
        f"retrans {res['retransmissions']}, drops {res.get('udp_drops')} "
        f"-> {'PASS' if res['passed'] else 'FAIL'}"
        + (f" {res['fail_detail']}" if res["fail_detail"] else "")
    )
    if not a.keep and res["passed"]:
        for fn in os.listdir(d):
            os.unlink(os.path.join(d, fn))
        os.rmdir(d)
        res.pop("dir")
    return res


def search(a, run):
    log(f"run {run}: {a.element}")
    trials = []

    def t(rate):
        r = trial(a, rate, len(trials) + 1)
        trials.append(r)
        return r["passed"]

    def t_retry(rate):
        for _ in range(1 + a.retries):
            if t(rate):
                return True
        return False

    best, fail = None, None
    if t_retry(a.start):
        best = a.start
        rate = a.start + a.step
        while rate <= a.max_rate:
            if t_retry(rate):
                best = rate
                rate += a.step
            else:
                fail = rate
                break
    else:
        fail = a.start
        rate = a.start - a.step
        while rate > 0:
            if t_retry(rate):
                best = rate
                break
            fail = rate
            rate -= a.step
    if best is not None and fail is not None:
        lo, hi = best, fail
        while hi - lo > a.resolution:
            mid = int(round((lo + hi) / 2 / 10) * 10)
            if mid in (lo, hi):
                break
            if t(mid):
                lo = mid
            else:
                hi = mid
        best = lo
    log(f"run {run}: max {best} CPS (first failure {fail})")
    return {"max_cps": best, "first_fail": fail, "trials": trials}


def host_info():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    model = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def sysctl(k):
        try:
            with open("/proc/sys/" + k.replace(".", "/")) as f:
                return f.read().split()[0]
        except OSError:
            return None

    def cmd_out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=10).stdout.strip().splitlines()[0]
        except Exception:
            return None

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
        "rmem_max": sysctl("net.core.rmem_max"),
        "wmem_max": sysctl("net.core.wmem_max"),
        "sipp": (cmd_out(["sipp", "-v"]) or "").strip() or None,
        "kamailio": cmd_out(["kamailio", "-v"]),
        "git_head": cmd_out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("element", choices=["kamailio", "kolokol"])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--start", type=int, default=1000)
    p.add_argument("--step", type=int, default=250)
    p.add_argument("--resolution", type=int, default=50,
                   help="bisect pass/fail down to this many CPS (0: no bisection)")
    p.add_argument("--retries", type=int, default=1,
                   help="extra tries of a failing step before it counts as failed")
    p.add_argument("--max-rate", type=int, default=20000)
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds of call creation per trial (-m = rate * duration)")
    p.add_argument("--hold-ms", type=int, default=1000)
    p.add_argument("--max-fail", type=float, default=0.001)
    p.add_argument("--rate-tol", type=float, default=0.05)
    p.add_argument("--trial-timeout", type=float, default=60.0,
                   help="s after the last call's hold before the uac is stopped")
    p.add_argument("--port-wait", type=float, default=60.0)
    p.add_argument("--kolokol-bin", default=os.path.join(ROOT, "target", "release", "kolokol"))
    p.add_argument("--port-mode", default="per-leg", choices=["per-leg", "per-call"],
                   help="kolokol media.port_mode")
    p.add_argument("--calls-max", type=int, default=16000, help="kolokol media.calls_max")
    p.add_argument("--nice", type=int, default=0,
                   help="run element and SIPp under nice -n N (e.g. -10 on a host "
                   "shared with builds; root only for N < 0)")
    p.add_argument("--workdir", default=None, help="parent of the per-trial temp dirs")
    p.add_argument("--keep", action="store_true", help="keep passing trials' logs too")
    p.add_argument("--out", help="write the full result (every trial) as JSON here")
    a = p.parse_args()
    if a.runs < 1 or a.start < 1 or a.step < 1:
        p.error("--runs, --start and --step must be positive")
    if a.element == "kolokol" and not os.access(a.kolokol_bin, os.X_OK):
        raise SystemExit(f"{a.kolokol_bin} missing: cargo build --release")
    NICE[0] = a.nice
    if a.workdir is None:
        a.workdir = tempfile.mkdtemp(prefix=f"sip-cps-{a.element}-")
    os.makedirs(a.workdir, exist_ok=True)
    info = host_info()
    if info["rmem_max"] and int(info["rmem_max"]) < BUFF_SIZE:
        log(f"warning: net.core.rmem_max {info['rmem_max']} < {BUFF_SIZE}: "
            "SIPp's -buff_size is capped (see tuning/host.sh)")
    log(f"logs under {a.workdir}; host {info['nproc']} x {info['cpu_model']}")

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        runs = [search(a, i + 1) for i in range(a.runs)]
    except RuntimeError as e:
        raise SystemExit(f"sip_cps: {e}; logs under {a.workdir}")
    per_run = [r["max_cps"] for r in runs]
    valid = [x for x in per_run if x is not None]
    summary = {
        "bench": "sip_cps",
        "element": a.element,
        "started": started,
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "criterion": f"failed/calls < {a.max_fail}, achieved rate >= {1 - a.rate_tol:.2f} x target",
        "hold_ms": a.hold_ms,
        "duration_s": a.duration,
        "nice": a.nice,
        "median_cps": statistics.median(valid) if valid else None,
        "per_run_cps": per_run,
        "range": [min(valid), max(valid)] if valid else None,
        "host": info,
        "workdir": a.workdir,
    }
    if a.out:
        with open(a.out, "w") as f:
            json.dump({**summary, "runs": runs}, f, indent=1)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
