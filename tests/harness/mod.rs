//! Process harness shared by the tests that run real programs (Kolokol,
//! SIPp, Kamailio): a directory per test, processes in their own process
//! groups stopped by PID at the end, logs kept and printed on failure.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// xorshift64* step.
pub fn xorshift(rng: &mut u64) -> u64 {
    // xorshift64*
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33
}

/// Nanoseconds since the epoch (0 if the clock is before it).
pub fn nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Owns the test's directory and every process it starts. On drop it stops
/// the processes (SIGTERM, then SIGKILL to each one's own process group),
/// then removes the directory after a pass, or prints its path and the tail
/// of each log after a failure.
pub struct Harness {
    label: String,
    /// The test's directory (configs, logs, SIPp files).
    pub dir: PathBuf,
    procs: Vec<Proc>,
}

pub struct Proc {
    name: &'static str,
    child: Child,
    status: Option<ExitStatus>,
}

/// Index of a process in its [`Harness`].
pub type ProcId = usize;

impl Harness {
    /// A fresh directory `kolokol-<label>-<pid>-<nanos>` in the temp dir.
    pub fn new(label: impl Into<String>) -> Harness {
        let label = label.into();
        let dir = std::env::temp_dir().join(format!(
            "kolokol-{label}-{}-{}",
            std::process::id(),
            nanos() % 1_000_000_000
        ));
        fs::create_dir_all(&dir).unwrap();
        Harness {
            label,
            dir,
            procs: Vec::new(),
        }
    }

    /// Start `cmd` in its own process group with stdout/stderr in
    /// `<dir>/<name>.out` / `.err`.
    pub fn spawn(&mut self, name: &'static str, mut cmd: Command) -> ProcId {
        let out = fs::File::create(self.dir.join(format!("{name}.out"))).unwrap();
        let err = fs::File::create(self.dir.join(format!("{name}.err"))).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let _ = fs::write(self.dir.join(format!("{name}.cmd")), format!("{cmd:?}\n"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        self.procs.push(Proc {
            name,
            child,
            status: None,
        });
        self.procs.len() - 1
    }

    /// The name a process was started under.
    pub fn name(&self, id: ProcId) -> &'static str {
        self.procs[id].name
    }

    pub fn try_wait(&mut self, id: ProcId) -> Option<ExitStatus> {
        let p = &mut self.procs[id];
        if p.status.is_none() {
            p.status = p.child.try_wait().ok().flatten();
        }
        p.status
    }

    /// Wait for the process to exit; panic (and so kill it) after `limit`.
    pub fn wait(&mut self, id: ProcId, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_wait(id) {
                return st;
            }
            if Instant::now() > deadline {
                panic!("{} did not exit within {limit:?}", self.procs[id].name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for the exit (bounded).
    pub fn terminate(&mut self, id: ProcId, limit: Duration) -> ExitStatus {
        if self.try_wait(id).is_none() {
            signal(&self.procs[id].child.id().to_string(), "TERM");
        }
        self.wait(id, limit)
    }

    /// The OS process id.
    pub fn pid(&self, id: ProcId) -> u32 {
        self.procs[id].child.id()
    }

    pub fn assert_alive(&mut self, id: ProcId) {
        if let Some(st) = self.try_wait(id) {
            panic!(
                "{} exited early with {st}; its stderr:\n{}",
                self.procs[id].name,
                tail(&self.dir.join(format!("{}.err", self.procs[id].name)), 30)
            );
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Callers and trunks before the gateway (reverse start order).
        for p in self.procs.iter_mut().rev() {
            p.stop();
        }
        if std::thread::panicking() {
            eprintln!(
                "\n{} FAILED; logs kept in {}",
                self.label,
                self.dir.display()
            );
            if let Ok(entries) = fs::read_dir(&self.dir) {
                let mut files: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|x| x == "err" || x == "log" || x == "out")
                            && !p.to_string_lossy().ends_with("_msg.log")
                    })
                    .collect();
                files.sort();
                for f in files {
                    eprintln!("----- {} (tail) -----\n{}", f.display(), tail(&f, 25));
                }
            }
        } else if std::env::var_os("KOLOKOL_IT_KEEP_LOGS").is_some() {
            eprintln!("{}: logs kept in {}", self.label, self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Proc {
    fn stop(&mut self) {
        let pid = self.child.id();
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        if self.status.is_none() {
            signal(&pid.to_string(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(st)) = self.child.try_wait() {
                    self.status = Some(st);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The group is this process's own (process_group(0)): whatever it
        // left behind goes too. Harmless when the group is empty.
        signal(&format!("-{pid}"), "KILL");
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

/// `kill -s SIG -- TARGET` (TARGET a pid, or -pgid for a process group).
pub fn signal(target: &str, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `lines` lines of a file (or the error reading it).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned());
    match text {
        Ok(t) => {
            let all: Vec<&str> = t.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({e})"),
    }
}

/// A tool from PATH or the usual system directories (Kamailio lives in
/// /usr/sbin, which is not on every user's PATH).
pub fn find_tool(name: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/local/bin",
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/sbin",
        "/sbin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed (not on PATH nor in the sbin directories); this \
                 test needs {package}. The test command (scripts/test.sh) installs it"
            )
        })
}

/// Wait until a UDP socket is bound on ip:port (read from /proc/net/udp, so
/// the check never takes the port itself).
pub fn wait_udp_bound(h: &mut Harness, id: ProcId, ip: Ipv4Addr, port: u16, limit: Duration) {
    wait_in_table(h, id, "/proc/net/udp", None, ip, port, limit);
}

/// Waits until something listens on `ip:port`/tcp (state 0A, LISTEN, in
/// `/proc/net/tcp`); fails if process `id` exits first or the time runs out.
pub fn wait_tcp_listen(h: &mut Harness, id: ProcId, ip: Ipv4Addr, port: u16, limit: Duration) {
    wait_in_table(h, id, "/proc/net/tcp", Some("0A"), ip, port, limit);
}

fn wait_in_table(
    h: &mut Harness,
    id: ProcId,
    table: &str,
    state: Option<&str>,
    ip: Ipv4Addr,
    port: u16,
    limit: Duration,
) {
    let o = ip.octets();
    // /proc/net/{udp,tcp} print the address as the in-memory u32, i.e.
    // reversed octets in hex on little-endian hosts.
    let le = format!(
        "{:02X}{:02X}{:02X}{:02X}:{port:04X}",
        o[3], o[2], o[1], o[0]
    );
    let be = format!(
        "{:02X}{:02X}{:02X}{:02X}:{port:04X}",
        o[0], o[1], o[2], o[3]
    );
    let deadline = Instant::now() + limit;
    loop {
        h.assert_alive(id);
        let text = fs::read_to_string(table).unwrap_or_default();
        if text.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = f.get(1).copied().unwrap_or("");
            (local == le || local == be) && state.is_none_or(|s| f.get(3) == Some(&s))
        }) {
            return;
        }
        if Instant::now() > deadline {
            panic!("nothing bound {ip}:{port} ({table}) within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last row of SIPp's `-trace_stat` CSV as name → number (cumulative
/// counters such as `SuccessfulCall(C)` and `FailedCall(C)`).
pub fn sipp_final_stats(path: &Path) -> BTreeMap<String, i64> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let (Some(header), Some(last)) = (lines.first(), lines.get(1..).and_then(<[_]>::last)) else {
        return BTreeMap::new();
    };
    header
        .split(';')
        .zip(last.split(';'))
        .filter_map(|(k, v)| Some((k.trim().to_owned(), v.trim().parse().ok()?)))
        .collect()
}
