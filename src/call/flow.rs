//! The portal's two call flows (SPEC call flows 1 and 2; issue 5), as a
//! sans-IO state machine that lives on the shard that owns the calls.
//!
//! A flow is one portal call: a **click-to-call** (call the citizen, play a
//! short prompt when they answer, dial the support line, bridge the two) or
//! a **notification** (call the citizen, play the message and the code
//! digit by digit, repeated, and optionally collect 1 = confirm, 2 =
//! reject). A flow places its SIP calls through the B2BUA's origination
//! API ([`super::B2bua::originate`]); both legs of a click-to-call are on
//! the same shard, so the bridge is a relay change, not a hand-over.
//!
//! [`Flows`] takes the origination events of its calls, "playback done"
//! and DTMF digits from the shard's media, the control plane's hang-up and
//! the time; it gives [`FlowAction`]s (originate, hang up, play, stop
//! playing, bridge, unbridge) and [`FlowEvent`]s (the portal's states).
//!
//! | flow          | state events, in order                                        |
//! |---------------|---------------------------------------------------------------|
//! | click-to-call | dialing, ringing, answered, bridged, completed                 |
//! | notification  | dialing, ringing, answered, confirmed or rejected, completed   |
//! | either        | no-answer, busy or failed instead, when the citizen's call fails |
//!
//! Every flow ends with exactly one terminal event (completed, no-answer,
//! busy, failed), after all of its calls have ended. `completed` carries
//! the result: `bridged` (click-to-call), `delivered` (a notification
//! played to the end), `confirmed`, `rejected`, `no-input` (confirmation
//! asked, nothing pressed), `support-unavailable` (the support line could
//! not be reached; the citizen heard the goodbye prompt) or `hung-up`
//! (the control plane ended it).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::b2bua::Hangup;
use super::originate::{OriginateRequest, OriginationEvent, OriginationEventKind, OriginationId};

/// Flows at most per shard (their calls count against the B2BUA's slots
/// too; this bounds the flow table itself).
pub const FLOWS_MAX_DEFAULT: usize = 8192;

/// Pending actions and events before new ones are dropped and counted.
const QUEUE_MAX: usize = 16_384;

/// How long a notification waits for a key after asking for one; asked
/// twice in all.
pub const DTMF_WAIT: Duration = Duration::from_secs(8);

/// Silence between the repetitions of a code.
const REPEAT_GAP: Duration = Duration::from_millis(600);

/// Silence between digits.
pub const DIGIT_GAP: Duration = Duration::from_millis(250);

/// Longest code read out.
pub const DIGITS_MAX: usize = 12;

/// Most repetitions of a code.
pub const REPEAT_MAX: u8 = 5;

/// A flow in the table; stale once the flow has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowId {
    index: u32,
    generation: u32,
}

/// The citizen's call or the support line's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowLeg {
    /// The citizen (every flow).
    Citizen,
    /// The support line (click-to-call).
    Support,
}

/// What the portal asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowKind {
    /// Call the citizen, then the support line, and bridge them.
    ClickToCall {
        /// The citizen's number.
        citizen: String,
        /// The support line's number (routed like any number).
        support: String,
    },
    /// Call the citizen and play a message.
    Notification {
        /// The citizen's number.
        number: String,
        /// A prompt name to play first (else the generic notification).
        prompt: Option<String>,
        /// A code to read digit by digit.
        digits: Option<String>,
        /// How many times the code is read (1..=[`REPEAT_MAX`]).
        repeat: u8,
        /// Ask for 1 (confirm) or 2 (reject).
        require_confirmation: bool,
    },
}

/// A flow to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRequest {
    /// The flow.
    pub kind: FlowKind,
    /// Prompt language (`en`, `ru`).
    pub language: String,
    /// Account, for the records.
    pub account: String,
    /// The caller-ID to present instead of the pool's.
    pub caller_id: Option<String>,
    /// The control plane's id, echoed in every event.
    pub correlation: u64,
    /// A limit on each call's duration.
    pub max_duration: Option<Duration>,
}

/// Something to play on a call, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A prompt by name in the flow's language.
    Prompt(String),
    /// Digits read one by one.
    Digits(String),
    /// Silence.
    Silence(Duration),
}

/// What the shell should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowAction {
    /// Place a call ([`super::B2bua::originate`]); report the result with
    /// [`Flows::handle_originated`].
    Originate {
        /// The flow.
        flow: FlowId,
        /// Which of its calls.
        leg: FlowLeg,
        /// What to dial.
        req: OriginateRequest,
    },
    /// Hang up a call ([`super::B2bua::hangup_origination`]).
    Hangup {
        /// The call.
        call: OriginationId,
    },
    /// Play these segments on the call (toward its far end), replacing
    /// what is playing; report the end with [`Flows::handle_play_done`].
    Play {
        /// The call.
        call: OriginationId,
        /// The prompt language.
        language: String,
        /// What to play.
        segments: Vec<Segment>,
    },
    /// Stop playing on the call (no "done" follows).
    StopPlay {
        /// The call.
        call: OriginationId,
    },
    /// Connect the two calls' media to each other.
    Bridge {
        /// The citizen's call.
        a: OriginationId,
        /// The support line's call.
        b: OriginationId,
    },
    /// Undo [`FlowAction::Bridge`] (before either call's media goes).
    Unbridge {
        /// The citizen's call.
        a: OriginationId,
        /// The support line's call.
        b: OriginationId,
    },
    /// Watch the call's incoming media for RFC 4733 digits; report them
    /// with [`Flows::handle_dtmf`].
    Listen {
        /// The call.
        call: OriginationId,
    },
}

/// The portal's states (issue 5 item 5; `queued` and `rejected-by-policy`
/// belong to the control plane, before a flow exists).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowState {
    /// A call to the citizen is being placed (again on a failover).
    Dialing,
    /// The citizen's phone rings.
    Ringing,
    /// The citizen answered.
    Answered,
    /// Citizen and support line are connected.
    Bridged,
    /// The citizen pressed 1.
    Confirmed,
    /// The citizen pressed 2.
    Rejected,
    /// Done (see [`FlowDetail::result`]). Terminal.
    Completed,
    /// The citizen did not answer. Terminal.
    NoAnswer,
    /// The citizen was busy. Terminal.
    Busy,
    /// The citizen could not be called. Terminal.
    Failed,
}

impl FlowState {
    /// The portal's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Dialing => "dialing",
            FlowState::Ringing => "ringing",
            FlowState::Answered => "answered",
            FlowState::Bridged => "bridged",
            FlowState::Confirmed => "confirmed",
            FlowState::Rejected => "rejected",
            FlowState::Completed => "completed",
            FlowState::NoAnswer => "no-answer",
            FlowState::Busy => "busy",
            FlowState::Failed => "failed",
        }
    }

    /// No event follows.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            FlowState::Completed | FlowState::NoAnswer | FlowState::Busy | FlowState::Failed
        )
    }
}

/// Details of a [`FlowEvent`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowDetail {
    /// The leg the event is about.
    pub leg: Option<FlowLeg>,
    /// The final SIP status of a failed call.
    pub sip_status: Option<u16>,
    /// The Q.850 cause of the end.
    pub q850: Option<u8>,
    /// The digit the citizen pressed.
    pub dtmf: Option<char>,
    /// The outcome (terminal events): `bridged`, `delivered`, `confirmed`,
    /// `rejected`, `no-input`, `support-unavailable`, `hung-up`.
    pub result: Option<&'static str>,
    /// The trunk of a dialing attempt.
    pub trunk: Option<String>,
}

/// A state change of one flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    /// The flow.
    pub flow: FlowId,
    /// [`FlowRequest::correlation`].
    pub correlation: u64,
    /// When.
    pub at: Instant,
    /// The new state.
    pub state: FlowState,
    /// More about it.
    pub detail: FlowDetail,
}

/// Why a flow was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The flow table is full.
    #[error("too many flows on this shard")]
    Full,
    /// A code that is empty, too long or not digits.
    #[error("digits must be 1 to 12 decimal digits")]
    BadDigits,
    /// Neither a prompt nor digits.
    #[error("a notification needs a prompt or digits")]
    NothingToSay,
    /// Repeat out of range.
    #[error("repeat must be 1 to 5")]
    BadRepeat,
}

/// Why [`Flows::hangup`] did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no such flow (it has ended)")]
pub struct UnknownFlow;

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Flows started.
    pub started: u64,
    /// Flows ended.
    pub ended: u64,
    /// Origination events of calls no flow owns.
    pub events_unknown: u64,
    /// Actions or events dropped because a queue was full.
    pub dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the citizen to answer.
    Calling,
    /// Notification: playing the message (and the confirmation question).
    Playing,
    /// Notification: asked for a key, waiting (`asked` times so far).
    WaitingKey { asked: u8 },
    /// Click-to-call: prompt played / playing, support line being called.
    Connecting,
    /// Click-to-call: connected.
    Bridged,
    /// Playing the goodbye prompt before hanging up.
    Goodbye,
    /// Hanging up; waiting for the calls to end.
    Ending,
}

#[derive(Debug)]
struct LegCall {
    id: Option<OriginationId>,
    /// Answered and not ended.
    up: bool,
    /// Ended (or never placed).
    done: bool,
    /// We asked for its end.
    hung_up: bool,
}

impl LegCall {
    fn none() -> Self {
        LegCall {
            id: None,
            up: false,
            done: true,
            hung_up: false,
        }
    }

    fn placing() -> Self {
        LegCall {
            id: None,
            up: false,
            done: false,
            hung_up: false,
        }
    }
}

#[derive(Debug)]
struct Flow {
    generation: u32,
    req: FlowRequest,
    phase: Phase,
    citizen: LegCall,
    support: LegCall,
    ringing_sent: bool,
    bridged: bool,
    /// The outcome once known.
    result: Option<&'static str>,
    dtmf: Option<char>,
    /// Terminal state decided by the citizen's call failing.
    final_state: Option<(FlowState, FlowDetail)>,
    wait_until: Option<Instant>,
}

/// The flows of one shard. See the module docs.
pub struct Flows {
    flows: Vec<Option<Flow>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    by_call: HashMap<OriginationId, (u32, FlowLeg)>,
    actions: VecDeque<FlowAction>,
    events: VecDeque<FlowEvent>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    counters: FlowCounters,
}

impl Flows {
    /// A table for at most `max` flows.
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, u32::MAX as usize / 2);
        Flows {
            flows: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_call: HashMap::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            timers: BinaryHeap::new(),
            counters: FlowCounters::default(),
        }
        .with_capacity(max)
    }

    fn with_capacity(mut self, max: usize) -> Self {
        self.generations = vec![0; max];
        self.flows = (0..max).map(|_| None).collect();
        self.free = (0..max as u32).rev().collect();
        self
    }

    /// Counters.
    pub fn counters(&self) -> FlowCounters {
        self.counters
    }

    /// Flows in progress.
    pub fn len(&self) -> usize {
        self.flows.len() - self.free.len()
    }

    /// No flow in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `call` is one of the flows' calls.
    pub fn owns(&self, call: OriginationId) -> bool {
        self.by_call.contains_key(&call)
    }

    /// The next action for the shell.
    pub fn poll_action(&mut self) -> Option<FlowAction> {
        self.actions.pop_front()
    }

    /// The next state change for the control plane.
    pub fn poll_event(&mut self) -> Option<FlowEvent> {
        self.events.pop_front()
    }

    /// The earliest timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Starts a flow: its first action places the citizen's call.
    pub fn start(&mut self, now: Instant, req: FlowRequest) -> Result<FlowId, FlowError> {
        if let FlowKind::Notification {
            prompt,
            digits,
            repeat,
            ..
        } = &req.kind
        {
            if prompt.is_none() && digits.is_none() {
                return Err(FlowError::NothingToSay);
            }
            if let Some(d) = digits {
                if d.is_empty() || d.len() > DIGITS_MAX || !d.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(FlowError::BadDigits);
                }
            }
            if *repeat == 0 || *repeat > REPEAT_MAX {
                return Err(FlowError::BadRepeat);
            }
        }
        let index = self.free.pop().ok_or(FlowError::Full)?;
        let generation = self.generations[index as usize];
        let id = FlowId { index, generation };
        let number = match &req.kind {
            FlowKind::ClickToCall { citizen, .. } => citizen.clone(),
            FlowKind::Notification { number, .. } => number.clone(),
        };
        let oreq = OriginateRequest {
            number,
            caller_id: req.caller_id.clone(),
            account: req.account.clone(),
            correlation: req.correlation,
            max_duration: req.max_duration,
        };
        self.flows[index as usize] = Some(Flow {
            generation,
            req,
            phase: Phase::Calling,
            citizen: LegCall::placing(),
            support: LegCall::none(),
            ringing_sent: false,
            bridged: false,
            result: None,
            dtmf: None,
            final_state: None,
            wait_until: None,
        });
        self.counters.started += 1;
        self.act(FlowAction::Originate {
            flow: id,
            leg: FlowLeg::Citizen,
            req: oreq,
        });
        let _ = now;
        Ok(id)
    }

    /// The result of a [`FlowAction::Originate`]: the call, or `None` when
    /// the B2BUA refused it (`status` is the SIP-like status to report:
    /// 503 for capacity or trunk limits, 404 for no route, 400 for a bad
    /// number).
    pub fn handle_originated(
        &mut self,
        now: Instant,
        flow: FlowId,
        leg: FlowLeg,
        call: Result<OriginationId, u16>,
    ) {
        let Some(f) = self.flow_mut(flow) else {
            // The flow ended meanwhile: do not leave the call running.
            if let Ok(c) = call {
                self.act(FlowAction::Hangup { call: c });
            }
            return;
        };
        match call {
            Ok(c) => {
                let ending = f.phase == Phase::Ending;
                let l = match leg {
                    FlowLeg::Citizen => &mut f.citizen,
                    FlowLeg::Support => &mut f.support,
                };
                l.id = Some(c);
                l.done = false;
                if ending {
                    // The flow ended while this call was being placed.
                    l.hung_up = true;
                }
                self.by_call.insert(c, (flow.index, leg));
                if ending {
                    self.act(FlowAction::Hangup { call: c });
                }
            }
            Err(status) => {
                match leg {
                    FlowLeg::Citizen => f.citizen.done = true,
                    FlowLeg::Support => f.support.done = true,
                }
                self.call_failed(now, flow, leg, status, 0);
            }
        }
    }

    /// One event of a call this table placed (others are counted and
    /// ignored).
    pub fn handle_origination(&mut self, now: Instant, ev: &OriginationEvent) {
        let Some(&(index, leg)) = self.by_call.get(&ev.id) else {
            self.counters.events_unknown += 1;
            return;
        };
        let Some(generation) = self.flows[index as usize].as_ref().map(|f| f.generation) else {
            self.by_call.remove(&ev.id);
            self.counters.events_unknown += 1;
            return;
        };
        let flow = FlowId { index, generation };
        match &ev.kind {
            OriginationEventKind::Dialing { trunk, .. } => {
                if leg == FlowLeg::Citizen {
                    let detail = FlowDetail {
                        leg: Some(leg),
                        trunk: Some(trunk.clone()),
                        ..FlowDetail::default()
                    };
                    self.emit(now, flow, FlowState::Dialing, detail);
                }
            }
            OriginationEventKind::Ringing { .. } => {
                let f = self.flow_mut(flow).expect("live flow");
                if leg == FlowLeg::Citizen && !f.ringing_sent {
                    f.ringing_sent = true;
                    let detail = FlowDetail {
                        leg: Some(leg),
                        ..FlowDetail::default()
                    };
                    self.emit(now, flow, FlowState::Ringing, detail);
                }
            }
            OriginationEventKind::Answered { .. } => self.answered(now, flow, leg, ev.id),
            OriginationEventKind::Failed { status, q850 } => {
                self.by_call.remove(&ev.id);
                let f = self.flow_mut(flow).expect("live flow");
                match leg {
                    FlowLeg::Citizen => f.citizen.done = true,
                    FlowLeg::Support => f.support.done = true,
                }
                self.call_failed(now, flow, leg, *status, *q850);
            }
            OriginationEventKind::Ended { by, q850 } => {
                self.by_call.remove(&ev.id);
                self.call_ended(now, flow, leg, *by, *q850);
            }
        }
    }

    /// A [`FlowAction::Play`] on `call` has played to its end.
    pub fn handle_play_done(&mut self, now: Instant, call: OriginationId) {
        let Some((flow, leg)) = self.flow_of(call) else {
            return;
        };
        if leg != FlowLeg::Citizen {
            return;
        }
        let f = self.flow_mut(flow).expect("live flow");
        match f.phase {
            Phase::Playing => {
                let confirm = matches!(
                    f.req.kind,
                    FlowKind::Notification {
                        require_confirmation: true,
                        ..
                    }
                );
                if confirm {
                    f.phase = Phase::WaitingKey { asked: 1 };
                    self.wait_key(now, flow);
                } else {
                    f.result = Some("delivered");
                    self.goodbye(now, flow);
                }
            }
            Phase::Goodbye => self.end(now, flow),
            // The connecting prompt ends; the support line may still ring.
            _ => {}
        }
    }

    /// The citizen (on `call`) pressed `digit`.
    pub fn handle_dtmf(&mut self, now: Instant, call: OriginationId, digit: char) {
        let Some((flow, leg)) = self.flow_of(call) else {
            return;
        };
        if leg != FlowLeg::Citizen {
            return;
        }
        let f = self.flow_mut(flow).expect("live flow");
        let asks = matches!(
            f.req.kind,
            FlowKind::Notification {
                require_confirmation: true,
                ..
            }
        );
        if !asks || !matches!(f.phase, Phase::Playing | Phase::WaitingKey { .. }) {
            return;
        }
        let (state, result) = match digit {
            '1' => (FlowState::Confirmed, "confirmed"),
            '2' => (FlowState::Rejected, "rejected"),
            _ => return,
        };
        f.result = Some(result);
        f.dtmf = Some(digit);
        f.wait_until = None;
        let detail = FlowDetail {
            leg: Some(FlowLeg::Citizen),
            dtmf: Some(digit),
            ..FlowDetail::default()
        };
        self.emit(now, flow, state, detail);
        self.goodbye(now, flow);
    }

    /// The control plane hangs the flow up.
    pub fn hangup(&mut self, now: Instant, flow: FlowId) -> Result<(), UnknownFlow> {
        let f = self.flow_mut(flow).ok_or(UnknownFlow)?;
        if f.phase == Phase::Ending {
            return Ok(());
        }
        if f.result.is_none() {
            f.result = Some("hung-up");
        }
        self.end(now, flow);
        Ok(())
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((t, index, generation))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let flow = FlowId { index, generation };
            let Some(f) = self.flow_mut(flow) else {
                continue;
            };
            if f.wait_until != Some(t) {
                continue;
            }
            f.wait_until = None;
            if let Phase::WaitingKey { asked } = f.phase {
                if asked < 2 {
                    f.phase = Phase::WaitingKey { asked: asked + 1 };
                    let call = f.citizen.id;
                    let language = f.req.language.clone();
                    if let Some(call) = call {
                        self.act(FlowAction::Play {
                            call,
                            language,
                            segments: vec![Segment::Prompt("confirm-prompt".into())],
                        });
                    }
                    self.wait_key(now, flow);
                } else {
                    f.result = Some("no-input");
                    self.goodbye(now, flow);
                }
            }
        }
    }

    // -- internals ----------------------------------------------------------

    fn flow_mut(&mut self, id: FlowId) -> Option<&mut Flow> {
        self.flows
            .get_mut(id.index as usize)?
            .as_mut()
            .filter(|f| f.generation == id.generation)
    }

    fn flow_of(&self, call: OriginationId) -> Option<(FlowId, FlowLeg)> {
        let &(index, leg) = self.by_call.get(&call)?;
        let f = self.flows[index as usize].as_ref()?;
        Some((
            FlowId {
                index,
                generation: f.generation,
            },
            leg,
        ))
    }

    fn act(&mut self, a: FlowAction) {
        if self.actions.len() >= QUEUE_MAX {
            self.counters.dropped += 1;
            return;
        }
        self.actions.push_back(a);
    }

    fn emit(&mut self, now: Instant, flow: FlowId, state: FlowState, detail: FlowDetail) {
        let Some(correlation) = self.flow_mut(flow).map(|f| f.req.correlation) else {
            return;
        };
        if self.events.len() >= QUEUE_MAX {
            self.counters.dropped += 1;
            return;
        }
        self.events.push_back(FlowEvent {
            flow,
            correlation,
            at: now,
            state,
            detail,
        });
    }

    fn wait_key(&mut self, now: Instant, flow: FlowId) {
        let t = now + DTMF_WAIT;
        if let Some(f) = self.flow_mut(flow) {
            f.wait_until = Some(t);
        }
        self.timers.push(Reverse((t, flow.index, flow.generation)));
    }

    fn answered(&mut self, now: Instant, flow: FlowId, leg: FlowLeg, call: OriginationId) {
        let f = self.flow_mut(flow).expect("live flow");
        match leg {
            FlowLeg::Citizen => f.citizen.up = true,
            FlowLeg::Support => f.support.up = true,
        }
        if f.phase == Phase::Ending {
            // Answered after we gave up: hang it up.
            self.act(FlowAction::Hangup { call });
            return;
        }
        match (leg, &f.req.kind) {
            (
                FlowLeg::Citizen,
                FlowKind::Notification {
                    prompt,
                    digits,
                    repeat,
                    require_confirmation,
                    ..
                },
            ) => {
                let mut segs = vec![Segment::Prompt(
                    prompt
                        .clone()
                        .unwrap_or_else(|| "notification-generic".into()),
                )];
                if let Some(d) = digits {
                    for r in 0..*repeat {
                        segs.push(Segment::Silence(REPEAT_GAP));
                        if r > 0 {
                            segs.push(Segment::Prompt("repeat".into()));
                        }
                        segs.push(Segment::Prompt("code-intro".into()));
                        segs.push(Segment::Digits(d.clone()));
                    }
                }
                if *require_confirmation {
                    segs.push(Segment::Silence(REPEAT_GAP));
                    segs.push(Segment::Prompt("confirm-prompt".into()));
                }
                f.phase = Phase::Playing;
                let language = f.req.language.clone();
                let listen = *require_confirmation;
                self.emit(
                    now,
                    flow,
                    FlowState::Answered,
                    FlowDetail {
                        leg: Some(leg),
                        ..FlowDetail::default()
                    },
                );
                if listen {
                    self.act(FlowAction::Listen { call });
                }
                self.act(FlowAction::Play {
                    call,
                    language,
                    segments: segs,
                });
            }
            (FlowLeg::Citizen, FlowKind::ClickToCall { support, .. }) => {
                f.phase = Phase::Connecting;
                f.support = LegCall::placing();
                let req = OriginateRequest {
                    number: support.clone(),
                    caller_id: f.req.caller_id.clone(),
                    account: f.req.account.clone(),
                    correlation: f.req.correlation,
                    max_duration: f.req.max_duration,
                };
                let language = f.req.language.clone();
                self.emit(
                    now,
                    flow,
                    FlowState::Answered,
                    FlowDetail {
                        leg: Some(leg),
                        ..FlowDetail::default()
                    },
                );
                self.act(FlowAction::Play {
                    call,
                    language,
                    segments: vec![Segment::Prompt("connecting".into())],
                });
                self.act(FlowAction::Originate {
                    flow,
                    leg: FlowLeg::Support,
                    req,
                });
            }
            (FlowLeg::Support, _) => {
                let Some(a) = f.citizen.id.filter(|_| f.citizen.up) else {
                    self.act(FlowAction::Hangup { call });
                    return;
                };
                f.phase = Phase::Bridged;
                f.bridged = true;
                f.result = Some("bridged");
                self.act(FlowAction::StopPlay { call: a });
                self.act(FlowAction::Bridge { a, b: call });
                self.emit(
                    now,
                    flow,
                    FlowState::Bridged,
                    FlowDetail {
                        leg: Some(FlowLeg::Support),
                        ..FlowDetail::default()
                    },
                );
            }
        }
    }

    /// A call of the flow failed before it was answered.
    fn call_failed(&mut self, now: Instant, flow: FlowId, leg: FlowLeg, status: u16, q850: u8) {
        let f = self.flow_mut(flow).expect("live flow");
        match leg {
            FlowLeg::Citizen => {
                if f.final_state.is_none() && f.result.is_none() {
                    let state = match status {
                        486 | 600 => FlowState::Busy,
                        408 | 480 | 487 if f.phase != Phase::Ending => FlowState::NoAnswer,
                        _ => FlowState::Failed,
                    };
                    f.final_state = Some((
                        state,
                        FlowDetail {
                            leg: Some(leg),
                            sip_status: Some(status),
                            q850: Some(q850),
                            ..FlowDetail::default()
                        },
                    ));
                }
                self.end(now, flow);
            }
            FlowLeg::Support => {
                if f.phase == Phase::Ending {
                    self.maybe_finish(now, flow);
                    return;
                }
                f.result = Some("support-unavailable");
                self.goodbye(now, flow);
            }
        }
    }

    /// An answered call of the flow ended.
    fn call_ended(&mut self, now: Instant, flow: FlowId, leg: FlowLeg, by: Hangup, q850: u8) {
        let f = self.flow_mut(flow).expect("live flow");
        let l = match leg {
            FlowLeg::Citizen => &mut f.citizen,
            FlowLeg::Support => &mut f.support,
        };
        l.up = false;
        l.done = true;
        let _ = (by, q850);
        if f.phase == Phase::Ending {
            self.maybe_finish(now, flow);
            return;
        }
        match leg {
            FlowLeg::Citizen => {
                // The citizen hung up (or a timer ended the call): the
                // outcome so far stands; a notification not yet played
                // through is `hung-up`.
                if f.result.is_none() {
                    f.result = Some("hung-up");
                }
                self.end(now, flow);
            }
            FlowLeg::Support => {
                if f.bridged {
                    self.end(now, flow);
                } else {
                    f.result = Some("support-unavailable");
                    self.goodbye(now, flow);
                }
            }
        }
    }

    /// Plays the goodbye prompt to the citizen, then ends the flow.
    fn goodbye(&mut self, now: Instant, flow: FlowId) {
        let f = self.flow_mut(flow).expect("live flow");
        if f.bridged {
            return self.end(now, flow);
        }
        match f.citizen.id.filter(|_| f.citizen.up) {
            Some(call) => {
                f.phase = Phase::Goodbye;
                f.wait_until = None;
                let language = f.req.language.clone();
                // The support line, if it is still being called, goes.
                let support = f
                    .support
                    .id
                    .filter(|_| !f.support.done && !f.support.hung_up);
                if support.is_some() {
                    f.support.hung_up = true;
                }
                if let Some(s) = support {
                    self.act(FlowAction::Hangup { call: s });
                }
                self.act(FlowAction::Play {
                    call,
                    language,
                    segments: vec![
                        Segment::Silence(Duration::from_millis(300)),
                        Segment::Prompt("goodbye".into()),
                    ],
                });
            }
            None => self.end(now, flow),
        }
    }

    /// Hangs up whatever of the flow is still up and finishes once all of
    /// its calls have ended.
    fn end(&mut self, now: Instant, flow: FlowId) {
        let f = self.flow_mut(flow).expect("live flow");
        f.phase = Phase::Ending;
        f.wait_until = None;
        let bridged = std::mem::take(&mut f.bridged);
        let (a, b) = (f.citizen.id, f.support.id);
        let mut hang = Vec::new();
        for l in [&mut f.citizen, &mut f.support] {
            if !l.done && !l.hung_up {
                if let Some(c) = l.id {
                    l.hung_up = true;
                    hang.push(c);
                }
            }
        }
        if bridged {
            if let (Some(a), Some(b)) = (a, b) {
                self.act(FlowAction::Unbridge { a, b });
            }
        }
        for c in hang {
            self.act(FlowAction::Hangup { call: c });
        }
        self.maybe_finish(now, flow);
    }

    fn maybe_finish(&mut self, now: Instant, flow: FlowId) {
        let f = self.flow_mut(flow).expect("live flow");
        // A call still being placed (no id yet) keeps the flow open: its
        // id comes with handle_originated, which hangs it up.
        if !(f.citizen.done && f.support.done) {
            return;
        }
        let (state, mut detail) = match f.final_state.take() {
            Some(s) => s,
            None => (FlowState::Completed, FlowDetail::default()),
        };
        if state == FlowState::Completed {
            detail.result = f.result.or(Some("hung-up"));
            detail.dtmf = f.dtmf;
        }
        self.emit(now, flow, state, detail);
        for id in [
            f_id(&self.flows, flow, FlowLeg::Citizen),
            f_id(&self.flows, flow, FlowLeg::Support),
        ]
        .into_iter()
        .flatten()
        {
            self.by_call.remove(&id);
        }
        self.flows[flow.index as usize] = None;
        self.generations[flow.index as usize] = flow.generation.wrapping_add(1);
        self.free.push(flow.index);
        self.counters.ended += 1;
    }
}

fn f_id(flows: &[Option<Flow>], flow: FlowId, leg: FlowLeg) -> Option<OriginationId> {
    let f = flows[flow.index as usize].as_ref()?;
    match leg {
        FlowLeg::Citizen => f.citizen.id,
        FlowLeg::Support => f.support.id,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::call::b2bua::BridgeId;

    /// A stand-in for the shard: numbers the calls it is asked to place
    /// and keeps what the flows asked for.
    struct Shell {
        flows: Flows,
        now: Instant,
        next: u32,
        /// (flow, leg, call, number) of every call placed.
        placed: Vec<(FlowId, FlowLeg, OriginationId, String)>,
        actions: Vec<FlowAction>,
        events: Vec<FlowEvent>,
        /// Refuse the next originate with this status.
        refuse: Option<u16>,
    }

    impl Shell {
        fn new() -> Self {
            Shell {
                flows: Flows::new(8),
                now: Instant::now(),
                next: 0,
                placed: Vec::new(),
                actions: Vec::new(),
                events: Vec::new(),
                refuse: None,
            }
        }

        fn drive(&mut self) {
            while let Some(a) = self.flows.poll_action() {
                if let FlowAction::Originate { flow, leg, req } = &a {
                    let r = match self.refuse.take() {
                        Some(s) => Err(s),
                        None => {
                            let id = OriginationId::new(BridgeId::for_test(self.next));
                            self.next += 1;
                            self.placed.push((*flow, *leg, id, req.number.clone()));
                            Ok(id)
                        }
                    };
                    self.flows.handle_originated(self.now, *flow, *leg, r);
                }
                self.actions.push(a);
            }
            while let Some(e) = self.flows.poll_event() {
                self.events.push(e);
            }
        }

        fn ev(&mut self, call: OriginationId, kind: OriginationEventKind) {
            let e = OriginationEvent {
                id: call,
                correlation: 9,
                at: self.now,
                kind,
            };
            self.flows.handle_origination(self.now, &e);
            self.drive();
        }

        fn call(&self, leg: FlowLeg) -> OriginationId {
            self.placed
                .iter()
                .rev()
                .find(|p| p.1 == leg)
                .map(|p| p.2)
                .expect("call placed")
        }

        fn states(&self) -> Vec<&'static str> {
            self.events.iter().map(|e| e.state.as_str()).collect()
        }

        fn last(&self) -> &FlowEvent {
            self.events.last().expect("an event")
        }

        fn hung_up(&self) -> Vec<OriginationId> {
            self.actions
                .iter()
                .filter_map(|a| match a {
                    FlowAction::Hangup { call } => Some(*call),
                    _ => None,
                })
                .collect()
        }

        fn plays(&self) -> Vec<Vec<Segment>> {
            self.actions
                .iter()
                .filter_map(|a| match a {
                    FlowAction::Play { segments, .. } => Some(segments.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    fn c2c() -> FlowRequest {
        FlowRequest {
            kind: FlowKind::ClickToCall {
                citizen: "+79001234567".into(),
                support: "+74950000000".into(),
            },
            language: "ru".into(),
            account: "acct".into(),
            caller_id: None,
            correlation: 9,
            max_duration: None,
        }
    }

    fn note(digits: Option<&str>, confirm: bool) -> FlowRequest {
        FlowRequest {
            kind: FlowKind::Notification {
                number: "+79001234567".into(),
                prompt: None,
                digits: digits.map(str::to_string),
                repeat: 2,
                require_confirmation: confirm,
            },
            language: "en".into(),
            account: "acct".into(),
            caller_id: None,
            correlation: 9,
            max_duration: None,
        }
    }

    fn answered() -> OriginationEventKind {
        OriginationEventKind::Answered {
            remote_sdp: Vec::new(),
        }
    }

    fn ended(by: Hangup) -> OriginationEventKind {
        OriginationEventKind::Ended { by, q850: 16 }
    }

    fn dialing() -> OriginationEventKind {
        OriginationEventKind::Dialing {
            trunk: "t1".into(),
            attempt: 1,
        }
    }

    #[test]
    fn click_to_call_bridges_and_completes_when_either_hangs_up() {
        let mut s = Shell::new();
        let f = s.flows.start(s.now, c2c()).unwrap();
        s.drive();
        let a = s.call(FlowLeg::Citizen);
        assert_eq!(s.placed[0].3, "+79001234567");
        s.ev(a, dialing());
        s.ev(
            a,
            OriginationEventKind::Ringing {
                status: 180,
                early_media: false,
            },
        );
        // A second 180 is not a second event.
        s.ev(
            a,
            OriginationEventKind::Ringing {
                status: 183,
                early_media: true,
            },
        );
        s.ev(a, answered());
        // The prompt plays and the support line is dialled at once.
        assert_eq!(s.plays(), vec![vec![Segment::Prompt("connecting".into())]]);
        let b = s.call(FlowLeg::Support);
        assert_eq!(s.placed[1].3, "+74950000000");
        // The support line's progress is not the citizen's.
        s.ev(b, dialing());
        s.ev(b, answered());
        assert!(s.actions.contains(&FlowAction::StopPlay { call: a }));
        assert!(s.actions.contains(&FlowAction::Bridge { a, b }));
        assert_eq!(s.states(), ["dialing", "ringing", "answered", "bridged"]);
        // The support agent hangs up: unbridge, hang up the citizen.
        s.ev(b, ended(Hangup::Callee));
        assert!(s.actions.contains(&FlowAction::Unbridge { a, b }));
        assert_eq!(s.hung_up(), vec![a]);
        assert_eq!(
            s.states().len(),
            4,
            "no terminal event before the last call ends"
        );
        s.ev(a, ended(Hangup::Caller));
        assert_eq!(s.last().state, FlowState::Completed);
        assert_eq!(s.last().detail.result, Some("bridged"));
        assert_eq!(s.flows.len(), 0);
        assert_eq!(s.flows.hangup(s.now, f), Err(UnknownFlow));
    }

    #[test]
    fn click_to_call_support_unavailable_plays_goodbye_then_hangs_up() {
        let mut s = Shell::new();
        s.flows.start(s.now, c2c()).unwrap();
        s.drive();
        let a = s.call(FlowLeg::Citizen);
        s.ev(a, answered());
        let b = s.call(FlowLeg::Support);
        s.ev(
            b,
            OriginationEventKind::Failed {
                status: 486,
                q850: 17,
            },
        );
        let plays = s.plays();
        assert_eq!(
            plays.last().unwrap().last(),
            Some(&Segment::Prompt("goodbye".into()))
        );
        assert!(s.hung_up().is_empty(), "hung up before the goodbye played");
        s.flows.handle_play_done(s.now, a);
        s.drive();
        assert_eq!(s.hung_up(), vec![a]);
        s.ev(a, ended(Hangup::Caller));
        assert_eq!(s.last().state, FlowState::Completed);
        assert_eq!(s.last().detail.result, Some("support-unavailable"));
    }

    #[test]
    fn citizen_failures_map_to_no_answer_busy_failed() {
        for (status, want) in [
            (408, FlowState::NoAnswer),
            (480, FlowState::NoAnswer),
            (486, FlowState::Busy),
            (600, FlowState::Busy),
            (503, FlowState::Failed),
            (404, FlowState::Failed),
        ] {
            let mut s = Shell::new();
            s.flows.start(s.now, note(Some("1234"), false)).unwrap();
            s.drive();
            let a = s.call(FlowLeg::Citizen);
            s.ev(a, OriginationEventKind::Failed { status, q850: 0 });
            assert_eq!(s.last().state, want, "status {status}");
            assert_eq!(s.last().detail.sip_status, Some(status));
            assert_eq!(s.flows.len(), 0);
        }
        // Refused by the B2BUA before any INVITE: failed at once.
        let mut s = Shell::new();
        s.refuse = Some(503);
        s.flows.start(s.now, c2c()).unwrap();
        s.drive();
        assert_eq!(s.states(), ["failed"]);
        assert_eq!(s.flows.len(), 0);
    }

    #[test]
    fn notification_reads_the_code_and_confirmation_by_dtmf() {
        for (digit, state, result) in [
            ('1', FlowState::Confirmed, "confirmed"),
            ('2', FlowState::Rejected, "rejected"),
        ] {
            let mut s = Shell::new();
            s.flows.start(s.now, note(Some("4711"), true)).unwrap();
            s.drive();
            let a = s.call(FlowLeg::Citizen);
            s.ev(a, answered());
            assert!(s.actions.contains(&FlowAction::Listen { call: a }));
            let segs = &s.plays()[0];
            let digits = segs
                .iter()
                .filter(|x| **x == Segment::Digits("4711".into()))
                .count();
            assert_eq!(digits, 2, "the code is read `repeat` times: {segs:?}");
            assert_eq!(segs.last(), Some(&Segment::Prompt("confirm-prompt".into())));
            // Other keys are ignored.
            s.flows.handle_dtmf(s.now, a, '5');
            s.drive();
            assert_eq!(s.states(), ["answered"]);
            s.flows.handle_play_done(s.now, a);
            s.flows.handle_dtmf(s.now, a, digit);
            s.drive();
            assert_eq!(s.last().state, state);
            assert_eq!(s.last().detail.dtmf, Some(digit));
            s.flows.handle_play_done(s.now, a);
            s.drive();
            assert_eq!(s.hung_up(), vec![a]);
            s.ev(a, ended(Hangup::Caller));
            assert_eq!(s.last().state, FlowState::Completed);
            assert_eq!(s.last().detail.result, Some(result));
        }
    }

    #[test]
    fn notification_without_key_asks_twice_then_gives_up() {
        let mut s = Shell::new();
        s.flows.start(s.now, note(Some("99"), true)).unwrap();
        s.drive();
        let a = s.call(FlowLeg::Citizen);
        s.ev(a, answered());
        s.flows.handle_play_done(s.now, a);
        s.drive();
        assert_eq!(s.flows.poll_timeout(), Some(s.now + DTMF_WAIT));
        s.now += DTMF_WAIT;
        s.flows.handle_timeout(s.now);
        s.drive();
        assert_eq!(
            s.plays().last().unwrap(),
            &vec![Segment::Prompt("confirm-prompt".into())],
            "asked again"
        );
        s.now += DTMF_WAIT;
        s.flows.handle_timeout(s.now);
        s.drive();
        assert_eq!(
            s.plays().last().unwrap().last(),
            Some(&Segment::Prompt("goodbye".into()))
        );
        s.flows.handle_play_done(s.now, a);
        s.drive();
        s.ev(a, ended(Hangup::Caller));
        assert_eq!(s.last().detail.result, Some("no-input"));
    }

    #[test]
    fn notification_without_confirmation_is_delivered() {
        let mut s = Shell::new();
        s.flows.start(s.now, note(None, false)).unwrap_err();
        let mut r = note(None, false);
        if let FlowKind::Notification { prompt, .. } = &mut r.kind {
            *prompt = Some("notification-generic".into());
        }
        s.flows.start(s.now, r).unwrap();
        s.drive();
        let a = s.call(FlowLeg::Citizen);
        s.ev(a, answered());
        assert!(!s.actions.contains(&FlowAction::Listen { call: a }));
        s.flows.handle_play_done(s.now, a);
        s.drive();
        s.flows.handle_play_done(s.now, a);
        s.drive();
        s.ev(a, ended(Hangup::Caller));
        assert_eq!(s.states(), ["answered", "completed"]);
        assert_eq!(s.last().detail.result, Some("delivered"));
    }

    #[test]
    fn hangup_by_the_control_plane_while_ringing_and_while_placing() {
        let mut s = Shell::new();
        let f = s.flows.start(s.now, c2c()).unwrap();
        s.drive();
        let a = s.call(FlowLeg::Citizen);
        s.flows.hangup(s.now, f).unwrap();
        s.drive();
        assert_eq!(s.hung_up(), vec![a]);
        s.ev(
            a,
            OriginationEventKind::Failed {
                status: 487,
                q850: 16,
            },
        );
        assert_eq!(s.last().state, FlowState::Completed);
        assert_eq!(s.last().detail.result, Some("hung-up"));

        // Hung up while the support line is being placed: its call is
        // hung up as soon as it has an id.
        let mut s = Shell::new();
        let f = s.flows.start(s.now, c2c()).unwrap();
        s.drive();
        let a = s.call(FlowLeg::Citizen);
        s.flows.handle_origination(
            s.now,
            &OriginationEvent {
                id: a,
                correlation: 9,
                at: s.now,
                kind: answered(),
            },
        );
        // Before the shell has placed the support call:
        s.flows.hangup(s.now, f).unwrap();
        s.drive();
        let b = s.call(FlowLeg::Support);
        let hung = s.hung_up();
        assert!(hung.contains(&a) && hung.contains(&b), "{hung:?}");
        s.ev(a, ended(Hangup::Caller));
        assert_eq!(s.flows.len(), 1, "support call still open");
        s.ev(
            b,
            OriginationEventKind::Failed {
                status: 487,
                q850: 16,
            },
        );
        assert_eq!(s.last().state, FlowState::Completed);
        assert_eq!(s.flows.len(), 0);
    }

    #[test]
    fn bad_requests_and_a_full_table_are_refused() {
        let mut s = Shell::new();
        assert_eq!(
            s.flows.start(s.now, note(Some("12a"), false)),
            Err(FlowError::BadDigits)
        );
        assert_eq!(
            s.flows.start(s.now, note(Some("1234567890123"), false)),
            Err(FlowError::BadDigits)
        );
        let mut r = note(Some("1"), false);
        if let FlowKind::Notification { repeat, .. } = &mut r.kind {
            *repeat = 6;
        }
        assert_eq!(s.flows.start(s.now, r), Err(FlowError::BadRepeat));
        for _ in 0..8 {
            s.flows.start(s.now, c2c()).unwrap();
        }
        assert_eq!(s.flows.start(s.now, c2c()), Err(FlowError::Full));
        // Events of calls nobody owns are counted, not trusted.
        let stray = OriginationId::new(BridgeId::for_test(999));
        s.ev(stray, answered());
        assert_eq!(s.flows.counters().events_unknown, 1);
    }
}
