//! A whole gateway in one process: the shards, the ng server, the portal
//! engine and its HTTPS API, wired as `kolokol run` (and `kolokol demo`)
//! run them.
//!
//! ```text
//!   shards ──ShardEvent──> engine thread ──(media timeouts)──> ng thread
//!     ^                        │ flow events -> registry, broadcast
//!     │ ShardCmd               v
//!   ng thread, API (tokio thread) ── CallService ──> engine
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::cdr::{CdrWriter, WriterConfig};
use crate::config::Config;
use crate::control::api::{spawn_api, spawn_api_with_cdr, ApiConfig, ApiHandle, CallService};
use crate::control::engine::Engine;
use crate::control::ng::NgServer;
use crate::shard::ShardHandle;

/// Depth of the shard event queue.
const EVENT_QUEUE: usize = 65_536;

/// A running gateway. [`Gateway::stop`] ends it in order.
pub struct Gateway {
    /// The shards.
    pub shards: Arc<[ShardHandle]>,
    /// The portal engine.
    pub engine: Arc<Engine>,
    /// The HTTPS API, when enabled and startable.
    pub api: Option<ApiHandle>,
    ng_addr: SocketAddr,
    ng_stop: Arc<AtomicBool>,
    ng_thread: Option<JoinHandle<()>>,
    ev_thread: Option<JoinHandle<()>>,
    /// The CDR writer and store (F-C2), when `[cdr] keys` are configured.
    cdr: Option<Cdr>,
    /// The XDP relay, when `datapath = "xdp"` and it attached (detached on
    /// drop); `None` relays on sockets only.
    pub xdp: Option<crate::media::xdp::XdpRelay>,
}

struct Cdr {
    writer: Arc<CdrWriter>,
    store: Arc<dyn crate::cdr::CdrStore>,
    _retention: crate::cdr::retention::RetentionJob,
}

/// Whether the API should start: `[api] enabled` and what it needs is
/// configured (a config without TLS and keys leaves it off, with a note).
pub enum ApiStart {
    /// Start it; a failure is a start error.
    Required,
    /// Start it if the configuration allows; say why not otherwise.
    IfConfigured,
}

impl Gateway {
    /// Starts everything; an error names what failed.
    pub fn start(cfg: &Config, api: ApiStart) -> Result<Gateway, String> {
        let (ev_tx, ev_rx) = crossbeam_channel::bounded(EVENT_QUEUE);
        // XDP first: the shards get its maps to offload leg pairs to.
        let xdp = crate::media::xdp::start(&cfg.media);
        let fds = match xdp.as_ref().map(|x| x.map_fds()) {
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => {
                crate::log::log(
                    crate::log::Level::Warn,
                    "media data path: XDP maps unavailable to shards, relaying on sockets",
                    &[("why", crate::log::Field::Str(&e.to_string()))],
                );
                None
            }
            None => None,
        };
        let shards: Arc<[ShardHandle]> = crate::shard::spawn_all_with_xdp(cfg, ev_tx, fds.as_ref())
            .map_err(|e| format!("shards: {e}"))?
            .into();
        let (ng_tx, ng_rx) = crossbeam_channel::bounded(EVENT_QUEUE);
        let mut ng = NgServer::bind(cfg.ng.listen, shards.clone(), ng_rx)
            .map_err(|e| format!("ng listen {}: {e}", cfg.ng.listen))?;
        let ng_addr = ng.local_addr().map_err(|e| e.to_string())?;
        // Call records: stored only with encryption keys configured (the
        // store never holds a number in clear).
        let cdr = if cfg.cdr.keys.is_empty() {
            crate::log::log(
                crate::log::Level::Warn,
                "call records are not stored: no [cdr] keys configured",
                &[],
            );
            None
        } else {
            let store = crate::cdr::open_store(&cfg.cdr).map_err(|e| format!("cdr: {e}"))?;
            let writer = Arc::new(
                CdrWriter::spawn(store.clone(), WriterConfig::from_config(&cfg.cdr))
                    .map_err(|e| format!("cdr writer: {e}"))?,
            );
            let retention = crate::cdr::retention::spawn_retention(
                store.clone(),
                cfg.cdr.retention_days,
                std::time::Duration::from_secs(3600 * u64::from(cfg.cdr.retention_interval_h)),
                |e| {
                    crate::log::log(
                        crate::log::Level::Error,
                        "cdr retention failed",
                        &[("why", crate::log::Field::Str(&e.to_string()))],
                    )
                },
            )
            .map_err(|e| format!("cdr retention: {e}"))?;
            Some(Cdr {
                writer,
                store,
                _retention: retention,
            })
        };
        let engine = Engine::new(
            shards.clone(),
            &cfg.flows,
            &cfg.policy,
            cdr.as_ref().map(|c| c.writer.clone()),
        );
        let e2 = engine.clone();
        let ev_thread = std::thread::Builder::new()
            .name("kolokol-events".into())
            .spawn(move || e2.run_events(ev_rx, ng_tx))
            .map_err(|e| e.to_string())?;
        let ng_stop = Arc::new(AtomicBool::new(false));
        let stop = ng_stop.clone();
        let ng_thread = std::thread::Builder::new()
            .name("kolokol-ng".into())
            .spawn(move || ng.serve(|| stop.load(Ordering::Relaxed)))
            .map_err(|e| e.to_string())?;
        let mut gw = Gateway {
            shards,
            engine,
            api: None,
            ng_addr,
            ng_stop,
            ng_thread: Some(ng_thread),
            ev_thread: Some(ev_thread),
            cdr,
            xdp,
        };
        if cfg.api.enabled {
            let ready = cfg.api.check_startable();
            match (ready, api) {
                (Ok(()), _) => {
                    let svc: Arc<dyn CallService> = gw.engine.clone();
                    let h = match &gw.cdr {
                        Some(c) => {
                            let records = Arc::new(crate::cdr::service::StoreCdrService::new(
                                c.store.clone(),
                            ));
                            spawn_api_with_cdr(ApiConfig::from_config(cfg), svc, records, None)
                        }
                        None => spawn_api(ApiConfig::from_config(cfg), svc, None),
                    }
                    .map_err(|e| format!("api: {e}"))?;
                    gw.api = Some(h);
                }
                (Err(e), ApiStart::Required) => return Err(format!("api: {e}")),
                (Err(e), ApiStart::IfConfigured) => {
                    crate::log::log(
                        crate::log::Level::Warn,
                        "portal API not started; see config/kolokol.toml",
                        &[("why", crate::log::Field::Str(&e.to_string()))],
                    );
                }
            }
        }
        Ok(gw)
    }

    /// The ng socket's address.
    pub fn ng_addr(&self) -> SocketAddr {
        self.ng_addr
    }

    /// The API's address, if it runs.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().map(ApiHandle::local_addr)
    }

    /// Draining was asked for (signal or `POST /v1/admin/drain`).
    pub fn draining(&self) -> bool {
        self.api.as_ref().is_some_and(ApiHandle::is_draining) || !self.engine.ready()
    }

    /// Stop taking new portal calls.
    pub fn drain(&self) {
        match &self.api {
            Some(a) => a.drain(),
            None => self.engine.drain(),
        }
    }

    /// Stops the API, the ng server and the shards (each prints its final
    /// counters), then the event thread.
    pub fn stop(mut self) {
        if let Some(a) = self.api.take() {
            a.shutdown();
        }
        self.ng_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ng_thread.take() {
            let _ = t.join();
        }
        for s in self.shards.iter() {
            s.stop();
        }
        // The event thread ends when the shards' senders are gone; the
        // engine holds the shard handles (not the senders), so this joins.
        if let Some(t) = self.ev_thread.take() {
            let _ = t.join();
        }
        // Last: everything the event thread queued is committed.
        if let Some(c) = self.cdr.take() {
            c.writer.shutdown();
        }
    }
}
