//! `kolokol`: the gateway binary.
//!
//! - `kolokol run [--config FILE]`: start the shards and the ng control
//!   socket; with no file, embedded defaults (ng on 127.0.0.1:2223, media on
//!   127.0.0.1:20000-59999).
//! - `kolokol check-config FILE`: validate a configuration and exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kolokol::config::Config;
use kolokol::control::api::CallService;
use kolokol::gateway::{ApiStart, Gateway};
use kolokol::log::{log, Field, Level};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// SIGTERM/SIGINT seen so far (the first drains, the second stops).
static SIGNALS: AtomicUsize = AtomicUsize::new(0);
/// SIGHUP: reload the policy.
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn on_hup(_: libc::c_int) {
    RELOAD.store(true, Ordering::Relaxed);
}

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  kolokol run [--config FILE]\n  kolokol demo\n  \
         kolokol token [--scope S] [--sub S] [--ttl SECONDS] [--account A]\n  \
         kolokol check-config FILE\n\n\
         With no --config, embedded defaults are used (see config/kolokol.toml)."
    );
    ExitCode::from(2)
}

fn load(path: Option<PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(&p).map_err(|e| format!("{}: {e}", p.display())),
        None => Config::parse("").map_err(|e| e.to_string()),
    }
}

fn run(cfg: Config, path: Option<PathBuf>) -> Result<(), String> {
    // SAFETY: installing handlers that only store to atomics.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, on_hup as *const () as libc::sighandler_t);
    }
    kolokol::log::init(&cfg.log);
    let gw = Gateway::start(&cfg, ApiStart::IfConfigured)?;
    let sip = if cfg.sip.enabled {
        let mut l: Vec<String> = cfg.sip.udp.iter().map(|a| format!("udp:{a}")).collect();
        l.extend(cfg.sip.tcp.iter().map(|a| format!("tcp:{a}")));
        l.extend(cfg.sip.tls.iter().map(|a| format!("tls:{a}")));
        l.join(" ")
    } else {
        "off".to_string()
    };
    let api = gw
        .api_addr()
        .map_or("off".to_string(), |a| format!("https://{a}/v1"));
    let media = format!(
        "{} ports {}-{}",
        cfg.media.address, cfg.media.port_min, cfg.media.port_max
    );
    let ng = gw.ng_addr().to_string();
    log(
        Level::Info,
        "started",
        &[
            ("shards", Field::Int(cfg.shards.count as i64)),
            ("media", Field::Str(&media)),
            ("ng", Field::Str(&ng)),
            ("sip", Field::Str(&sip)),
            ("api", Field::Str(&api)),
        ],
    );
    // Graceful drain (F-O3): the first SIGTERM/SIGINT (or POST
    // /v1/admin/drain) stops new portal calls; the process exits once the
    // active ones have ended, after flows.max_duration_s at most, or at a
    // second signal.
    let mut drain_deadline: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if RELOAD.swap(false, Ordering::Relaxed) {
            match &path {
                Some(p) => match Config::load(p) {
                    Ok(new) => {
                        gw.engine.reload_policy(&new.policy);
                        let file = p.display().to_string();
                        match kolokol::shard::reload_trunks(&gw.shards, &new) {
                            Ok(()) => log(
                                Level::Info,
                                "policy and trunks reloaded",
                                &[("file", Field::Str(&file))],
                            ),
                            Err(e) => log(
                                Level::Warn,
                                "policy reloaded; trunks kept",
                                &[
                                    ("file", Field::Str(&file)),
                                    ("why", Field::Str(&e.to_string())),
                                ],
                            ),
                        }
                    }
                    Err(e) => log(
                        Level::Error,
                        "reload refused, old config kept",
                        &[("why", Field::Str(&e.to_string()))],
                    ),
                },
                None => log(Level::Warn, "SIGHUP ignored: no --config file", &[]),
            }
        }
        let signals = SIGNALS.load(Ordering::Relaxed);
        if signals >= 2 {
            break;
        }
        if signals == 1 && drain_deadline.is_none() {
            eprintln!(
                "kolokol: draining ({} portal calls active)",
                gw.engine.active_calls()
            );
            gw.drain();
        }
        if gw.draining() {
            let d = *drain_deadline.get_or_insert_with(|| {
                Instant::now() + Duration::from_secs(cfg.flows.max_duration_s)
            });
            if gw.engine.active_calls() == 0 || Instant::now() >= d {
                break;
            }
        }
    }
    log(Level::Info, "stopping", &[]);
    let shards = gw.shards.clone();
    // Stop first: each shard publishes its final counters as it stops.
    gw.stop();
    for s in shards.iter() {
        let m = &s.metrics;
        eprintln!(
            "shard {}: rx {} tx {} drops {} wakeups {}; sip rx {} tx {} dropped {} \
             rejected {} handed-over {} records {}; xdp installs {} packets {} bytes {} \
             src_drops {} map_errors {} egress_direct {} egress_updates {}",
            s.index,
            m.rx.load(Ordering::Relaxed),
            m.tx.load(Ordering::Relaxed),
            m.drops_total(),
            m.wakeups.load(Ordering::Relaxed),
            m.sip_rx.load(Ordering::Relaxed),
            m.sip_tx.load(Ordering::Relaxed),
            m.sip_dropped.load(Ordering::Relaxed),
            m.sip_rejected.load(Ordering::Relaxed),
            m.sip_handed_over.load(Ordering::Relaxed),
            m.sip_records.load(Ordering::Relaxed),
            m.xdp_installs.load(Ordering::Relaxed),
            m.xdp_packets.load(Ordering::Relaxed),
            m.xdp_bytes.load(Ordering::Relaxed),
            m.xdp_src_drops.load(Ordering::Relaxed),
            m.xdp_map_errors.load(Ordering::Relaxed),
            m.xdp_egress_direct.load(Ordering::Relaxed),
            m.xdp_egress_updates.load(Ordering::Relaxed),
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else {
        return usage();
    };
    match cmd.as_str() {
        "run" => {
            let mut path = None;
            while let Some(a) = args.next() {
                match a.as_str() {
                    "--config" | "-c" => match args.next() {
                        Some(p) => path = Some(PathBuf::from(p)),
                        None => return usage(),
                    },
                    _ => return usage(),
                }
            }
            match load(path.clone()).and_then(|c| run(c, path)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kolokol: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "demo" => match kolokol::demo::run::run_demo() {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("kolokol demo: {e}");
                ExitCode::FAILURE
            }
        },
        "token" => {
            let rest: Vec<String> = args.collect();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            match kolokol::control::api::token_cli(&rest, now) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        "check-config" => {
            let Some(p) = args.next() else {
                return usage();
            };
            match load(Some(PathBuf::from(&p))) {
                // The TLS certificate and keys are read too: a file that
                // does not load is a start error, so it is a config error.
                Ok(cfg) => match kolokol::shard::stream::tls_configs(&cfg) {
                    Ok(_) => {
                        println!("{p}: ok");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("{p}: {e}");
                        ExitCode::FAILURE
                    }
                },
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => usage(),
    }
}
