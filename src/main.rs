//! `kolokol`: the gateway binary.
//!
//! - `kolokol run [--config FILE]`: start the shards and the ng control
//!   socket; with no file, embedded defaults (ng on 127.0.0.1:2223, media on
//!   127.0.0.1:20000-59999).
//! - `kolokol check-config FILE`: validate a configuration and exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use kolokol::config::Config;
use kolokol::control::ng::NgServer;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  kolokol run [--config FILE]\n  kolokol check-config FILE\n\n\
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

fn run(cfg: Config) -> Result<(), String> {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let (ev_tx, ev_rx) = crossbeam_channel::bounded(65_536);
    let shards = kolokol::shard::spawn_all(&cfg, ev_tx).map_err(|e| format!("shards: {e}"))?;
    let mut ng = NgServer::bind(cfg.ng.listen, shards, ev_rx)
        .map_err(|e| format!("ng listen {}: {e}", cfg.ng.listen))?;
    let sip = if cfg.sip.enabled {
        let udp: Vec<String> = cfg.sip.udp.iter().map(|a| format!("udp:{a}")).collect();
        udp.join(" ")
    } else {
        "off".to_string()
    };
    eprintln!(
        "kolokol: {} shard(s), media {} ports {}-{}, ng on {}, sip {sip}",
        cfg.shards.count,
        cfg.media.address,
        cfg.media.port_min,
        cfg.media.port_max,
        ng.local_addr().map_err(|e| e.to_string())?
    );
    ng.serve(|| STOP.load(Ordering::Relaxed));
    eprintln!("kolokol: stopping");
    // Stop first: each shard publishes its final counters as it stops.
    ng.shutdown();
    for s in ng.shards() {
        let m = &s.metrics;
        eprintln!(
            "shard {}: rx {} tx {} drops {} wakeups {}; sip rx {} tx {} dropped {} \
             rejected {} handed-over {} records {}",
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
            match load(path).and_then(run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kolokol: {e}");
                    ExitCode::FAILURE
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
