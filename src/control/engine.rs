//! The portal's call engine: what the HTTPS API ([`super::api`]) calls
//! ([`CallService`]), between the API and the shards.
//!
//! A request passes the policy ([`crate::policy`]), gets a call id and a
//! correlation number, and starts a flow ([`crate::call::flow`]) on the
//! least-loaded shard ([`crate::shard::start_flow`]); the flow's events
//! come back on the shard event queue, which [`Engine::run_events`] reads
//! on its own thread. The engine keeps a bounded registry of calls (the
//! views the API returns) and publishes every state change on a
//! broadcast channel that the API's event stream and webhooks read.
//!
//! Locks: the registry and the policy each have a mutex, taken for
//! microseconds by the API's blocking pool and the event thread. Nothing
//! here is on the packet path; the shards never wait for the engine.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use super::api::{
    ApiError, CallEvent, CallKind, CallResult, CallService, CallState, CallView,
    ClickToCallRequest, Language, NotificationRequest, Principal, UtcTime,
};
use crate::call::flow::{FlowEvent, FlowKind, FlowRequest, FlowState};
use crate::call::{CallOrigin, CallRecord};
use crate::cdr::{Cdr, CdrContext, CdrKind, CdrWriter, ClockAnchor, SubmitError};
use crate::config::{FlowsConfig, PolicyConfig};
use crate::policy::{self, BlockSubject, Policy, PolicyEvent, PolicyRequest};
use crate::shard::{FlowRef, ShardError, ShardEvent, ShardHandle};

/// Capacity of the event broadcast (a slower subscriber is told it lagged).
const BROADCAST_DEPTH: usize = 4096;

struct Entry {
    view: CallView,
    flow: Option<FlowRef>,
    /// The B2BUA records of the flow's calls (citizen first), kept until
    /// the flow ends and its CDRs are written.
    records: Vec<(CallRecord, ClockAnchor)>,
}

/// A terminal state waiting for its records to be durable (F-C2: a call
/// is reported completed only once its CDR is on disk).
struct Pending {
    /// The last record's ticket (tickets become durable in order).
    ticket: u64,
    since: std::time::Instant,
    id: String,
    corr: u64,
    view: CallView,
    detail: serde_json::Value,
}

/// How long a terminal state waits for its CDR before it is reported
/// anyway (with `"cdr": "not_durable"` in the event): the store is failing.
const DURABLE_WAIT_MAX: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Registry {
    by_id: HashMap<String, Entry>,
    by_corr: HashMap<u64, String>,
    /// Ended calls, oldest first, for eviction.
    ended: VecDeque<String>,
    active: usize,
}

/// Calls by final state, for metrics.
#[derive(Default)]
struct Outcomes {
    counts: [AtomicU64; CallState::ALL.len()],
}

/// The engine. See the module docs.
pub struct Engine {
    shards: Arc<[ShardHandle]>,
    cfg: FlowsConfig,
    policy: Mutex<Policy>,
    reg: Mutex<Registry>,
    events: tokio::sync::broadcast::Sender<CallEvent>,
    next_event: AtomicU64,
    next_corr: AtomicU64,
    draining: AtomicBool,
    outcomes: Outcomes,
    created: AtomicU64,
    /// The CDR writer; None: records are not stored.
    cdr: Option<Arc<CdrWriter>>,
    /// Records that could not be queued (the writer's queue was full for
    /// longer than the retries) or had no store.
    cdr_dropped: AtomicU64,
}

fn language_str(l: Language) -> &'static str {
    match l {
        Language::En => "en",
        Language::Ru => "ru",
    }
}

fn state_index(s: CallState) -> usize {
    CallState::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

fn policy_error(e: policy::PolicyError) -> ApiError {
    let mut a = ApiError::new(
        e.http_status(),
        e.code(),
        "Refused by policy",
        e.to_string(),
    );
    if let Some(s) = e.retry_after_s() {
        a = a.retry_after(s);
    }
    a
}

fn shard_error(e: ShardError) -> ApiError {
    match e {
        ShardError::Flow(f) => {
            ApiError::new(422, "invalid_flow", "Invalid call request", f.to_string())
        }
        ShardError::NoSip => ApiError::new(
            503,
            "sip_disabled",
            "SIP is not enabled",
            "sip.enabled is false",
        ),
        e => ApiError::new(503, "unavailable", "Gateway unavailable", e.to_string()).retry_after(1),
    }
}

impl Engine {
    /// An engine over these shards. Start [`Engine::run_events`] on a
    /// thread with the shard event queue.
    pub fn new(
        shards: Arc<[ShardHandle]>,
        flows: &FlowsConfig,
        policy: &PolicyConfig,
        cdr: Option<Arc<CdrWriter>>,
    ) -> Arc<Engine> {
        let (tx, _) = tokio::sync::broadcast::channel(BROADCAST_DEPTH);
        Arc::new(Engine {
            shards,
            cfg: flows.clone(),
            policy: Mutex::new(Policy::new(policy)),
            reg: Mutex::new(Registry::default()),
            events: tx,
            next_event: AtomicU64::new(1),
            next_corr: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            outcomes: Outcomes::default(),
            created: AtomicU64::new(0),
            cdr,
            cdr_dropped: AtomicU64::new(0),
        })
    }

    /// Reloads the policy (SIGHUP), keeping its counters and blocks.
    pub fn reload_policy(&self, cfg: &PolicyConfig) {
        self.policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reload(cfg);
    }

    /// Reads the shard event queue until it closes: flow events update the
    /// registry and are published; everything else goes to `others` (the
    /// ng server's media timeouts).
    pub fn run_events(&self, rx: Receiver<ShardEvent>, others: Sender<ShardEvent>) {
        let mut pending: VecDeque<Pending> = VecDeque::new();
        loop {
            // With terminal states waiting for their records, look at the
            // writer every couple of milliseconds.
            let ev = if pending.is_empty() {
                match rx.recv() {
                    Ok(ev) => Some(ev),
                    Err(_) => break,
                }
            } else {
                match rx.recv_timeout(Duration::from_millis(2)) {
                    Ok(ev) => Some(ev),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        self.flush_pending(&mut pending, true);
                        break;
                    }
                }
            };
            match ev {
                Some(ShardEvent::Flow { event, .. }) => {
                    if let Some(p) = self.on_flow_event(event) {
                        pending.push_back(p);
                    }
                }
                Some(ShardEvent::Record { record, anchor, .. }) => {
                    self.on_record(*record, ClockAnchor::new(anchor.0, anchor.1))
                }
                // Raw originations are not the portal's; nothing to do.
                Some(ShardEvent::Origination { .. }) => {}
                Some(other) => {
                    let _ = others.try_send(other);
                }
                None => {}
            }
            self.flush_pending(&mut pending, false);
        }
    }

    /// Reports the terminal states whose records are durable (all of them
    /// when `all`, after waiting for each).
    fn flush_pending(&self, pending: &mut VecDeque<Pending>, all: bool) {
        while let Some(p) = pending.front() {
            let durable = match &self.cdr {
                Some(w) if all => w
                    .wait_durable(crate::cdr::Ticket(p.ticket), DURABLE_WAIT_MAX)
                    .is_ok(),
                Some(w) => w.durable_through() >= p.ticket,
                None => true,
            };
            if !durable && p.since.elapsed() < DURABLE_WAIT_MAX {
                return;
            }
            let mut p = pending.pop_front().expect("front exists");
            if !durable {
                if let Some(d) = p.detail.as_object_mut() {
                    d.insert("cdr".into(), "not_durable".into());
                }
                crate::log::log(
                    crate::log::Level::Error,
                    "call record not durable in time; reported anyway",
                    &[("call_id", crate::log::Field::Str(&p.id))],
                );
            }
            self.finish(p);
        }
    }

    /// Applies a terminal state to the registry and publishes it.
    fn finish(&self, p: Pending) {
        let mut reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = reg.by_id.get_mut(&p.id) {
            e.view = p.view.clone();
            e.flow = None;
        }
        reg.by_corr.remove(&p.corr);
        reg.active = reg.active.saturating_sub(1);
        reg.ended.push_back(p.id.clone());
        while reg.ended.len() > self.cfg.calls_kept {
            if let Some(old) = reg.ended.pop_front() {
                reg.by_id.remove(&old);
            }
        }
        drop(reg);
        self.outcomes.counts[state_index(p.view.state)].fetch_add(1, Ordering::Relaxed);
        self.log_state(&p.view);
        self.publish(&p.view, p.detail);
    }

    /// Queues a record; `None` when it could not be (counted).
    fn submit(&self, cdr: Cdr) -> Option<u64> {
        let w = self.cdr.as_ref()?;
        let mut cdr = cdr;
        // A full queue is a burst: give the writer a moment, a few times.
        for _ in 0..50 {
            match w.submit(cdr) {
                Ok(t) => return Some(t.0),
                Err(SubmitError::Full(c)) => {
                    cdr = *c;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => break,
            }
        }
        self.cdr_dropped.fetch_add(1, Ordering::Relaxed);
        crate::log::log(
            crate::log::Level::Error,
            "call record not queued (writer full or stopped)",
            &[],
        );
        None
    }

    /// A call's record from a shard: kept for its flow, or written now
    /// (inbound calls, originations the portal did not start).
    fn on_record(&self, record: CallRecord, anchor: ClockAnchor) {
        if let CallOrigin::Originated { correlation, .. } = &record.origin {
            let mut reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(id) = reg.by_corr.get(correlation).cloned() {
                if let Some(e) = reg.by_id.get_mut(&id) {
                    e.records.push((record, anchor));
                    return;
                }
            }
        }
        if self.cdr.is_some() {
            let cdr = Cdr::from_call(&record, CdrContext::default(), &anchor);
            let _ = self.submit(cdr);
        }
    }

    fn log_state(&self, view: &CallView) {
        let st = serde_json::to_value(view.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        crate::log::log(
            crate::log::Level::Info,
            "call state",
            &[
                ("call_id", crate::log::Field::Str(&view.id)),
                ("account", crate::log::Field::Str(&view.account)),
                ("state", crate::log::Field::Str(&st)),
                ("number", crate::log::Field::Number(&view.number)),
            ],
        );
    }

    fn publish(&self, view: &CallView, detail: serde_json::Value) {
        let ev = CallEvent {
            id: self.next_event.fetch_add(1, Ordering::Relaxed),
            call_id: view.id.clone(),
            account: view.account.clone(),
            state: view.state,
            at: view.updated_at,
            detail,
        };
        // No subscriber is fine.
        let _ = self.events.send(ev);
    }

    fn on_flow_event(&self, ev: FlowEvent) -> Option<Pending> {
        let state = match ev.state {
            FlowState::Dialing => CallState::Dialing,
            FlowState::Ringing => CallState::Ringing,
            FlowState::Answered => CallState::Answered,
            FlowState::Bridged => CallState::Bridged,
            FlowState::Confirmed => CallState::Confirmed,
            FlowState::Rejected => CallState::Rejected,
            FlowState::Completed => CallState::Completed,
            FlowState::NoAnswer => CallState::NoAnswer,
            FlowState::Busy => CallState::Busy,
            FlowState::Failed => CallState::Failed,
        };
        let now = UtcTime::now();
        let mut detail = serde_json::Map::new();
        let mut reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
        let id = reg.by_corr.get(&ev.correlation).cloned()?;
        let terminal = ev.state.is_terminal();
        let entry = reg.by_id.get_mut(&id)?;
        let (prev_state, prev_updated) = (entry.view.state, entry.view.updated_at);
        let v = &mut entry.view;
        v.state = state;
        v.updated_at = now;
        if state == CallState::Answered && v.answered_at.is_none() {
            v.answered_at = Some(now);
        }
        if let Some(d) = ev.detail.dtmf {
            // The key press is its own event; the terminal one repeats it.
            if !terminal {
                v.dtmf.get_or_insert_with(String::new).push(d);
            }
            detail.insert("dtmf".into(), d.to_string().into());
        }
        if let Some(s) = ev.detail.sip_status {
            v.sip_status = Some(s);
            detail.insert("sip_status".into(), s.into());
        }
        if let Some(q) = ev.detail.q850.filter(|q| *q != 0) {
            v.q850 = Some(q);
            detail.insert("q850".into(), q.into());
        }
        if let Some(t) = &ev.detail.trunk {
            detail.insert("trunk".into(), t.clone().into());
        }
        if terminal {
            v.ended_at = Some(now);
            let (result, code) = match (ev.state, ev.detail.result) {
                (FlowState::NoAnswer, _) => (CallResult::NoAnswer, None),
                (FlowState::Busy, _) => (CallResult::Busy, None),
                (FlowState::Failed, _) => (CallResult::Failed, Some("call_failed")),
                (_, Some("bridged")) => (CallResult::Completed, None),
                (_, Some("delivered")) => (CallResult::Delivered, None),
                (_, Some("confirmed")) => (CallResult::Confirmed, None),
                (_, Some("rejected")) => (CallResult::Rejected, None),
                (_, Some("no-input")) => (CallResult::Delivered, Some("no_input")),
                (_, Some("support-unavailable")) => {
                    (CallResult::Failed, Some("support_unavailable"))
                }
                (_, _) => (CallResult::Cancelled, None),
            };
            v.result = Some(result);
            if let Some(c) = code {
                v.error_code = Some(c.to_string());
                detail.insert("error_code".into(), c.into());
            }
            if let Some(r) = ev.detail.result {
                detail.insert("result".into(), r.into());
            }
        }
        if !terminal {
            let view = entry.view.clone();
            drop(reg);
            self.log_state(&view);
            self.publish(&view, serde_json::Value::Object(detail));
            return None;
        }
        // Terminal: the view as it will be, applied once the records are
        // durable.
        let mut view = entry.view.clone();
        let records = std::mem::take(&mut entry.records);
        // Restore the registry's view to the last reported state until
        // then (GET shows completed only when it is durable).
        entry.view.state = prev_state;
        entry.view.updated_at = prev_updated;
        entry.view.ended_at = None;
        entry.view.result = None;
        entry.view.error_code = None;
        drop(reg);
        view.updated_at = now;
        let kind = match view.kind {
            CallKind::ClickToCall => CdrKind::ClickToCall,
            CallKind::Notification => CdrKind::Notification,
        };
        let mut ticket = None;
        for (i, (rec, anchor)) in records.iter().enumerate() {
            let ctx = CdrContext {
                call_id: Some(if i == 0 {
                    id.clone()
                } else {
                    format!("{id}-leg{}", i + 1)
                }),
                kind: Some(kind),
                account: Some(view.account.clone()),
                result: view.result,
                dtmf: view.dtmf.clone(),
                ..CdrContext::default()
            };
            if let Some(t) = self.submit(Cdr::from_call(rec, ctx, anchor)) {
                ticket = Some(t);
            }
        }
        Some(Pending {
            ticket: ticket.unwrap_or(0),
            since: std::time::Instant::now(),
            id,
            corr: ev.correlation,
            view,
            detail: serde_json::Value::Object(detail),
        })
    }

    /// Policy events (automatic blocks) as events on the call that tripped
    /// them.
    fn policy_events(&self, pol: &mut Policy, call: &CallView) {
        while let Some(PolicyEvent::AutoBlocked {
            subject,
            value,
            until,
            ..
        }) = pol.poll_event()
        {
            let until_ms = UtcTime::from_system(until);
            let mut v = call.clone();
            v.state = CallState::RejectedByPolicy;
            let what = match subject {
                BlockSubject::Number => "number",
                BlockSubject::Account => "account",
            };
            let mut d = serde_json::Map::new();
            d.insert("auto_blocked".into(), what.into());
            // The number itself is masked (F-O4); accounts are not PII.
            let shown = match subject {
                BlockSubject::Number => crate::log::mask(&value),
                BlockSubject::Account => value,
            };
            d.insert("value".into(), shown.into());
            d.insert("until_unix_ms".into(), until_ms.unix_ms.into());
            self.publish(&v, serde_json::Value::Object(d));
        }
    }

    fn new_id(&self) -> String {
        let r: u64 = rand::random();
        format!("call_{r:016x}")
    }

    /// Checks, registers and starts one flow.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        who: &Principal,
        kind: CallKind,
        account: &str,
        number: &str,
        support: Option<&str>,
        flow: impl FnOnce(String, Option<String>) -> FlowKind,
        language: String,
        caller_id: Option<String>,
    ) -> Result<CallView, ApiError> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(ApiError::new(
                503,
                "draining",
                "Draining",
                "the gateway is draining and takes no new calls",
            ));
        }
        if let Some(a) = &who.account {
            if a != account {
                return Err(ApiError::forbidden_account(format!(
                    "the token is for account {a:?}"
                )));
            }
        }
        let now = SystemTime::now();
        let utc = UtcTime::from_system(now);
        let mut view = CallView {
            id: self.new_id(),
            kind,
            account: account.to_string(),
            state: CallState::Queued,
            number: number.to_string(),
            support_line: support.map(str::to_string),
            created_at: utc,
            updated_at: utc,
            answered_at: None,
            ended_at: None,
            result: None,
            dtmf: None,
            sip_status: None,
            q850: None,
            error_code: None,
        };
        let mut pol = self.policy.lock().unwrap_or_else(|e| e.into_inner());
        let pkind = match kind {
            CallKind::ClickToCall => policy::CallKind::ClickToCall,
            CallKind::Notification => policy::CallKind::Notification,
        };
        let req = PolicyRequest {
            account,
            number,
            kind: pkind,
            support_line: support,
            dnd_exempt: false,
        };
        let admitted = match pol.check(now, &req) {
            Ok(a) => a,
            Err(e) => {
                self.policy_events(&mut pol, &view);
                self.outcomes.counts[state_index(CallState::RejectedByPolicy)]
                    .fetch_add(1, Ordering::Relaxed);
                crate::log::log(
                    crate::log::Level::Info,
                    "call refused by policy",
                    &[
                        ("account", crate::log::Field::Str(account)),
                        ("code", crate::log::Field::Str(e.code())),
                        ("number", crate::log::Field::Number(number)),
                    ],
                );
                return Err(policy_error(e));
            }
        };
        if let Err(e) = pol.commit(now, &admitted) {
            return Err(policy_error(e));
        }
        self.policy_events(&mut pol, &view);
        drop(pol);
        view.number = admitted.number().to_string();
        let support = admitted.support_line().map(|s| s.to_string());
        view.support_line = support.clone();
        let corr = self.next_corr.fetch_add(1, Ordering::Relaxed);
        let req = FlowRequest {
            kind: flow(view.number.clone(), support),
            language,
            account: account.to_string(),
            caller_id,
            correlation: corr,
            max_duration: Some(Duration::from_secs(self.cfg.max_duration_s)),
        };
        // Registered before the flow starts: its first events may come
        // before start_flow returns.
        {
            let mut reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
            reg.by_corr.insert(corr, view.id.clone());
            reg.by_id.insert(
                view.id.clone(),
                Entry {
                    view: view.clone(),
                    flow: None,
                    records: Vec::new(),
                },
            );
            reg.active += 1;
        }
        self.publish(&view, serde_json::json!({}));
        match crate::shard::start_flow(&self.shards, req) {
            Ok(f) => {
                let mut reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(e) = reg.by_id.get_mut(&view.id) {
                    // Unless it has ended already (a refusal by the B2BUA).
                    if !matches!(
                        e.view.state,
                        CallState::Completed
                            | CallState::Failed
                            | CallState::Busy
                            | CallState::NoAnswer
                    ) {
                        e.flow = Some(f);
                    }
                }
                self.created.fetch_add(1, Ordering::Relaxed);
                Ok(reg.by_id.get(&view.id).map_or(view, |e| e.view.clone()))
            }
            Err(e) => {
                let mut reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
                reg.by_corr.remove(&corr);
                reg.by_id.remove(&view.id);
                reg.active = reg.active.saturating_sub(1);
                Err(shard_error(e))
            }
        }
    }

    fn visible(who: &Principal, v: &CallView) -> bool {
        who.account.as_ref().is_none_or(|a| *a == v.account)
    }
}

impl CallService for Engine {
    fn create_click_to_call(
        &self,
        who: &Principal,
        req: ClickToCallRequest,
    ) -> Result<CallView, ApiError> {
        let support = req
            .support_line
            .clone()
            .or_else(|| self.cfg.support_line.clone())
            .ok_or_else(|| {
                ApiError::new(
                    422,
                    "no_support_line",
                    "No support line",
                    "the request names no support_line and flows.support_line is unset",
                )
            })?;
        let language = req
            .language
            .map(language_str)
            .unwrap_or(&self.cfg.language)
            .to_string();
        self.start(
            who,
            CallKind::ClickToCall,
            &req.account,
            &req.citizen_number,
            Some(&support),
            |citizen, support| FlowKind::ClickToCall {
                citizen,
                support: support.unwrap_or_default(),
            },
            language,
            req.caller_id,
        )
    }

    fn create_notification(
        &self,
        who: &Principal,
        req: NotificationRequest,
    ) -> Result<CallView, ApiError> {
        let NotificationRequest {
            account,
            number,
            language,
            prompt,
            digits,
            repeat,
            require_confirmation,
        } = req;
        self.start(
            who,
            CallKind::Notification,
            &account,
            &number,
            None,
            |number, _| FlowKind::Notification {
                number,
                prompt,
                digits,
                repeat,
                require_confirmation,
            },
            language_str(language).to_string(),
            None,
        )
    }

    fn get_call(&self, who: &Principal, id: &str) -> Result<CallView, ApiError> {
        let reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
        reg.by_id
            .get(id)
            .map(|e| e.view.clone())
            .filter(|v| Engine::visible(who, v))
            .ok_or_else(|| ApiError::not_found(format!("no call {id:?}")))
    }

    fn list_calls(&self, who: &Principal, active_only: bool) -> Result<Vec<CallView>, ApiError> {
        let reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<CallView> = reg
            .by_id
            .values()
            .map(|e| &e.view)
            .filter(|v| Engine::visible(who, v))
            .filter(|v| !active_only || v.ended_at.is_none())
            .cloned()
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    fn hangup(&self, who: &Principal, id: &str) -> Result<CallView, ApiError> {
        let (flow, view) = {
            let reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
            let e = reg
                .by_id
                .get(id)
                .filter(|e| Engine::visible(who, &e.view))
                .ok_or_else(|| ApiError::not_found(format!("no call {id:?}")))?;
            (e.flow, e.view.clone())
        };
        if let Some(f) = flow {
            // Already ending is fine: the terminal event follows.
            let _ = crate::shard::hangup_flow(&self.shards, f);
        }
        Ok(view)
    }

    fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && !self.shards.is_empty()
    }

    fn active_calls(&self) -> usize {
        self.reg.lock().unwrap_or_else(|e| e.into_inner()).active
    }

    fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP kolokol_calls_active Portal calls in progress.");
        let _ = writeln!(out, "# TYPE kolokol_calls_active gauge");
        let _ = writeln!(out, "kolokol_calls_active {}", self.active_calls());
        let _ = writeln!(
            out,
            "# HELP kolokol_calls_created_total Portal calls accepted."
        );
        let _ = writeln!(out, "# TYPE kolokol_calls_created_total counter");
        let _ = writeln!(
            out,
            "kolokol_calls_created_total {}",
            self.created.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP kolokol_calls_outcome_total Portal calls by final state."
        );
        let _ = writeln!(out, "# TYPE kolokol_calls_outcome_total counter");
        for (i, s) in CallState::ALL.iter().enumerate() {
            let n = self.outcomes.counts[i].load(Ordering::Relaxed);
            if s.is_terminal() || *s == CallState::RejectedByPolicy {
                let name = serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let _ = writeln!(out, "kolokol_calls_outcome_total{{state=\"{name}\"}} {n}");
            }
        }
        {
            let pol = self.policy.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(
                out,
                "# HELP kolokol_policy_refusals_total Calls refused by policy, by code."
            );
            let _ = writeln!(out, "# TYPE kolokol_policy_refusals_total counter");
            for (code, n) in pol.counters().refusals() {
                let _ = writeln!(out, "kolokol_policy_refusals_total{{code=\"{code}\"}} {n}");
            }
        }
        crate::shard::write_metrics(&self.shards, out);
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<CallEvent> {
        self.events.subscribe()
    }
}
