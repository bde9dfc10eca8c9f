//! The four RFC 3261 §17 transaction state machines, with the RFC 6026
//! corrections (the INVITE "Accepted" states and Timers L and M).
//!
//! * [`ClientTransaction`] with [`TxKind::Invite`]: §17.1.1 (Figure 5 as
//!   amended by RFC 6026 (amending §17.1.1.2)): Calling, Proceeding, Accepted, Completed,
//!   Terminated; Timers A, B, D, M.
//! * [`ClientTransaction`] with [`TxKind::NonInvite`]: §17.1.2 (Figure 6):
//!   Trying, Proceeding, Completed, Terminated; Timers E, F, K.
//! * [`ServerTransaction`] with [`TxKind::Invite`]: §17.2.1 (Figure 7 as
//!   amended by RFC 6026 (amending §17.2.1)): Proceeding, Accepted, Completed, Confirmed,
//!   Terminated; Timers G, H, I, L (and the 200 ms 100 Trying rule).
//! * [`ServerTransaction`] with [`TxKind::NonInvite`]: §17.2.2 (Figure 8):
//!   Trying, Proceeding, Completed, Terminated; Timer J.
//!
//! The machines are sans-IO (see `STYLE.md` §2): every input is a
//! `handle_*(now, ..)` call, outputs are drained with `poll_transmit`,
//! `poll_event` and `poll_timeout`, and time only enters as an argument.
//! After any `handle_*` call the driver drains `poll_transmit` and
//! `poll_event` until `None` and then re-reads `poll_timeout`.
//!
//! Messages are opaque bytes: the transaction never parses or builds SIP. The
//! caller extracts the status code of a response (or recognises a
//! retransmitted request or an ACK) and passes it in; where the RFC has the
//! transaction build a message (the ACK for a non-2xx final response,
//! §17.1.1.3, and the server's own 100 Trying, §17.2.1) the transaction user
//! supplies the bytes.
//!
//! [`TransactionKey`] implements the matching rules of §17.1.3 and §17.2.3 and
//! [`TransactionTable`] is the bounded store the shard keeps transactions in,
//! with an index of the earliest deadline.
//!
//! Not done here: the RFC 2543 matching fallback for requests without the
//! `z9hG4bK` magic cookie (§17.2.3; such keys are refused), Timer C
//! (a proxy timer, §16.6) and transport failover (RFC 3263).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Magic cookie that starts every RFC 3261 branch (§8.1.1.7).
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// Delay after which an INVITE server transaction sends its own 100 Trying if
/// the TU has not responded yet (RFC 3261 §17.2.1: "MUST generate a 100
/// (Trying) response unless it knows that the TU will generate a provisional
/// or final response within 200 ms").
pub const TRYING_DELAY: Duration = Duration::from_millis(200);

/// Timer D on unreliable transports (RFC 3261 Table 4: "> 32s for UDP"):
/// long enough to absorb every retransmission of the final response that the
/// server can send before its Timer H (64*T1 = 32 s) fires.
pub const TIMER_D_UNRELIABLE: Duration = Duration::from_secs(32);

/// Capacity of each transaction's event queue. One input produces at most
/// three events (Final + AckRequired, or Timeout + Terminated), so four is
/// enough when the driver drains after every input as it must; an event
/// that does not fit is dropped and counted ([`ClientTransaction::events_dropped`]).
const EVENTS_MAX: usize = 4;

/// RFC 3261 §17.1.1.1 / Table 4 timer base values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    /// T1, the RTT estimate (default 500 ms). Timers A, E, G start at T1;
    /// B, F, H, J, L, M are 64*T1.
    pub t1: Duration,
    /// T2, the cap on non-INVITE request and INVITE response retransmit
    /// intervals (default 4 s).
    pub t2: Duration,
    /// T4, the time a message stays in the network (default 5 s); Timers I
    /// and K.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64*T1, the transaction timeout (Timers B, F, H, J, L, M).
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Which of the two machine families a transaction runs (§17: INVITE
/// transactions differ because of the three-way handshake with ACK).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxKind {
    /// An INVITE transaction (§17.1.1, §17.2.1).
    Invite,
    /// Any other method except ACK, which has no transaction (§17.1.2,
    /// §17.2.2).
    NonInvite,
}

/// What a transaction tells its transaction user (TU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxEvent {
    /// A provisional (1xx) response was received; every one is passed up
    /// (§17.1.1.2, §17.1.2.2).
    Provisional(u16),
    /// A final response was received. On an INVITE client transaction every
    /// 2xx is passed up, retransmissions included (RFC 6026 (amending §17.1.1.2)), since the
    /// TU acknowledges 2xx itself (§13.2.2.4).
    Final(u16),
    /// INVITE client, 3xx–6xx: the TU must build the ACK (§17.1.1.3) and hand
    /// it over with [`ClientTransaction::set_ack`]; the transaction sends it
    /// and re-sends it for each retransmitted final response.
    AckRequired,
    /// Timer B or F fired on a client transaction (report it to the TU as a
    /// 408 Request Timeout, §8.1.3.1), or Timer H fired on an INVITE server
    /// transaction (the ACK never came, §17.2.1).
    Timeout,
    /// The transport reported a failure (§17.1.4, §17.2.4); treat as 503 on
    /// the client side.
    TransportError,
    /// The machine reached Terminated; the owner removes it after draining
    /// its transmits.
    Terminated,
}

impl TxEvent {
    /// The status code the TU acts on for a failed client transaction:
    /// 408 for [`TxEvent::Timeout`] (§8.1.3.1), 503 for
    /// [`TxEvent::TransportError`] (§8.1.3.1), the code for responses.
    pub fn status(&self) -> Option<u16> {
        match *self {
            TxEvent::Provisional(s) | TxEvent::Final(s) => Some(s),
            TxEvent::Timeout => Some(408),
            TxEvent::TransportError => Some(503),
            TxEvent::AckRequired | TxEvent::Terminated => None,
        }
    }
}

/// API misuse by the TU (never caused by peer input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// The status code is outside 100..=699.
    #[error("status code {0} is not in 100..=699")]
    BadStatus(u16),
    /// The call is not allowed in the machine's current state (e.g. a second
    /// final response, an ACK for a 2xx, a response after Terminated).
    #[error("not allowed in state {0}")]
    InvalidState(&'static str),
}

/// Fixed-size FIFO of events, so a transaction never allocates for them.
#[derive(Clone, Debug, Default)]
struct EventQueue {
    buf: [Option<TxEvent>; EVENTS_MAX],
    head: usize,
    len: usize,
    dropped: u32,
}

impl EventQueue {
    fn push(&mut self, ev: TxEvent) {
        if self.len == EVENTS_MAX {
            // The driver did not drain; keep the older events and count.
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        self.buf[(self.head + self.len) % EVENTS_MAX] = Some(ev);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<TxEvent> {
        if self.len == 0 {
            return None;
        }
        let ev = self.buf[self.head].take();
        self.head = (self.head + 1) % EVENTS_MAX;
        self.len -= 1;
        debug_assert!(ev.is_some(), "queued slot holds an event");
        ev
    }
}

fn earliest(timers: &[Option<Instant>]) -> Option<Instant> {
    timers.iter().flatten().min().copied()
}

/// Index of the first timer whose deadline is `<= now`, earliest first.
fn first_expired(timers: &[Option<Instant>], now: Instant) -> Option<usize> {
    timers
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.filter(|t| *t <= now).map(|t| (t, i)))
        .min()
        .map(|(_, i)| i)
}

// ---------------------------------------------------------------------------
// Client transactions (§17.1)
// ---------------------------------------------------------------------------

/// Timers of a client transaction, indexing its timer array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum ClientTimer {
    /// INVITE request retransmit, T1 doubling without cap (§17.1.1.2).
    A = 0,
    /// INVITE transaction timeout in Calling, 64*T1 (§17.1.1.2).
    B = 1,
    /// Wait for response retransmits in Completed: 32 s unreliable, 0
    /// reliable (§17.1.1.2).
    D = 2,
    /// Non-INVITE request retransmit, T1 doubling capped at T2 (§17.1.2.2).
    E = 3,
    /// Non-INVITE transaction timeout, 64*T1 (§17.1.2.2).
    F = 4,
    /// Wait for response retransmits in Completed: T4 unreliable, 0 reliable
    /// (§17.1.2.2).
    K = 5,
    /// Wait for 2xx retransmits in Accepted, 64*T1 (RFC 6026 (amending §17.1.1.2)).
    M = 6,
}

impl ClientTimer {
    /// Number of client timers.
    pub const COUNT: usize = 7;
    const ALL: [ClientTimer; Self::COUNT] = [
        ClientTimer::A,
        ClientTimer::B,
        ClientTimer::D,
        ClientTimer::E,
        ClientTimer::F,
        ClientTimer::K,
        ClientTimer::M,
    ];
}

/// State of a client transaction (Figures 5 and 6, RFC 6026 Figure 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, no response yet (INVITE only).
    Calling,
    /// Request sent, no response yet (non-INVITE only).
    Trying,
    /// A provisional response was received.
    Proceeding,
    /// A 2xx was received for an INVITE (RFC 6026).
    Accepted,
    /// A final (non-2xx for INVITE) response was received; absorbing
    /// retransmissions.
    Completed,
    /// Done; no further output.
    Terminated,
}

impl ClientState {
    fn name(self) -> &'static str {
        match self {
            ClientState::Calling => "Calling",
            ClientState::Trying => "Trying",
            ClientState::Proceeding => "Proceeding",
            ClientState::Accepted => "Accepted",
            ClientState::Completed => "Completed",
            ClientState::Terminated => "Terminated",
        }
    }
}

/// An RFC 3261 §17.1 client transaction (INVITE or non-INVITE).
///
/// The request bytes are sent once at creation (the first
/// [`poll_transmit`](Self::poll_transmit)) and retransmitted by Timer A/E on
/// unreliable transports.
#[derive(Debug)]
pub struct ClientTransaction {
    kind: TxKind,
    state: ClientState,
    reliable: bool,
    cfg: TimerConfig,
    request: Vec<u8>,
    ack: Option<Vec<u8>>,
    timers: [Option<Instant>; ClientTimer::COUNT],
    /// Current Timer A/E interval.
    retransmit_interval: Duration,
    send_request: bool,
    send_ack: bool,
    events: EventQueue,
    final_status: Option<u16>,
    retransmits: u32,
    last_now: Instant,
}

impl ClientTransaction {
    /// Starts a client transaction for `request` (the serialized request,
    /// whose top Via carries a fresh branch, §8.1.1.7) and queues its first
    /// transmission.
    ///
    /// `reliable` is true for TCP/TLS/SCTP: no retransmit timers, and the
    /// Completed wait (D/K) is zero (§17.1.1.2, §17.1.2.2).
    pub fn new(
        now: Instant,
        kind: TxKind,
        request: Vec<u8>,
        reliable: bool,
        cfg: TimerConfig,
    ) -> Self {
        let mut timers = [None; ClientTimer::COUNT];
        let (state, retransmit, timeout) = match kind {
            TxKind::Invite => (ClientState::Calling, ClientTimer::A, ClientTimer::B),
            TxKind::NonInvite => (ClientState::Trying, ClientTimer::E, ClientTimer::F),
        };
        if !reliable {
            timers[retransmit as usize] = Some(now + cfg.t1);
        }
        timers[timeout as usize] = Some(now + cfg.timeout());
        Self {
            kind,
            state,
            reliable,
            cfg,
            request,
            ack: None,
            timers,
            retransmit_interval: cfg.t1,
            send_request: true,
            send_ack: false,
            events: EventQueue::default(),
            final_status: None,
            retransmits: 0,
            last_now: now,
        }
    }

    /// INVITE or non-INVITE.
    pub fn kind(&self) -> TxKind {
        self.kind
    }

    /// Current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// True once the machine reached Terminated.
    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// The first final status received, if any.
    pub fn final_status(&self) -> Option<u16> {
        self.final_status
    }

    /// Number of request retransmissions sent by Timer A/E so far.
    pub fn retransmits(&self) -> u32 {
        self.retransmits
    }

    /// Events lost because the driver did not drain [`poll_event`](Self::poll_event).
    pub fn events_dropped(&self) -> u32 {
        self.events.dropped
    }

    /// The request bytes this transaction sends.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// A response with `status` matched this transaction (§17.1.3).
    ///
    /// Status codes outside 100..=699 are peer garbage and ignored (the
    /// parser should have answered or dropped them already).
    pub fn handle_response(&mut self, now: Instant, status: u16) {
        self.last_now = now;
        if !(100..=699).contains(&status) {
            return;
        }
        match self.kind {
            TxKind::Invite => self.invite_response(now, status),
            TxKind::NonInvite => self.non_invite_response(now, status),
        }
    }

    /// §17.1.1.2 with RFC 6026 (amending §17.1.1.2).
    fn invite_response(&mut self, now: Instant, status: u16) {
        match (self.state, status) {
            (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                // "SHOULD NOT retransmit the request any longer"; Timer B only
                // guards the Calling state.
                self.timers[ClientTimer::A as usize] = None;
                self.timers[ClientTimer::B as usize] = None;
                self.state = ClientState::Proceeding;
                self.events.push(TxEvent::Provisional(status));
            }
            (ClientState::Calling | ClientState::Proceeding, 200..=299) => {
                self.timers[ClientTimer::A as usize] = None;
                self.timers[ClientTimer::B as usize] = None;
                // RFC 6026 (amending §17.1.1.2): Accepted, Timer M = 64*T1, on any transport.
                self.timers[ClientTimer::M as usize] = Some(now + self.cfg.timeout());
                self.state = ClientState::Accepted;
                // Accepted only passes 2xx up for 32 s; the ACK comes from
                // the dialog. The request is never sent again: free it.
                self.request = Vec::new();
                self.final_status = Some(status);
                self.events.push(TxEvent::Final(status));
            }
            (ClientState::Calling | ClientState::Proceeding, _) => {
                self.timers[ClientTimer::A as usize] = None;
                self.timers[ClientTimer::B as usize] = None;
                self.state = ClientState::Completed;
                self.final_status = Some(status);
                // Timer D: 32 s on UDP. On a reliable transport D is zero,
                // but the ACK must still go out once, so the transaction ends
                // in set_ack; until then D = 64*T1 bounds a TU that never
                // supplies the ACK.
                let d = if self.reliable {
                    self.cfg.timeout()
                } else {
                    TIMER_D_UNRELIABLE
                };
                self.timers[ClientTimer::D as usize] = Some(now + d);
                self.events.push(TxEvent::Final(status));
                self.events.push(TxEvent::AckRequired);
            }
            // RFC 6026 (amending §17.1.1.2): every 2xx in Accepted goes to the TU, which
            // re-sends its ACK; anything else is discarded.
            (ClientState::Accepted, 200..=299) => self.events.push(TxEvent::Final(status)),
            // §17.1.1.2: a retransmitted final response in Completed makes
            // the transaction re-send the ACK, and is not passed up.
            (ClientState::Completed, 300..=699) if self.ack.is_some() => self.send_ack = true,
            _ => {}
        }
    }

    /// §17.1.2.2.
    fn non_invite_response(&mut self, now: Instant, status: u16) {
        match (self.state, status) {
            (ClientState::Trying | ClientState::Proceeding, 100..=199) => {
                // Timer E keeps running; from now on it re-arms with T2.
                self.state = ClientState::Proceeding;
                self.events.push(TxEvent::Provisional(status));
            }
            (ClientState::Trying | ClientState::Proceeding, _) => {
                self.timers[ClientTimer::E as usize] = None;
                self.timers[ClientTimer::F as usize] = None;
                self.final_status = Some(status);
                self.events.push(TxEvent::Final(status));
                if self.reliable {
                    // Timer K is zero on reliable transports.
                    self.terminate();
                } else {
                    self.state = ClientState::Completed;
                    self.timers[ClientTimer::K as usize] = Some(now + self.cfg.t4);
                    // Completed only absorbs retransmitted responses.
                    self.request = Vec::new();
                }
            }
            // Completed absorbs retransmitted responses.
            _ => {}
        }
    }

    /// Hands over the ACK for a 3xx–6xx final response (§17.1.1.3), after
    /// [`TxEvent::AckRequired`]. The ACK is sent now and re-sent for each
    /// retransmission of the final response while in Completed. On a
    /// reliable transport Timer D is zero, so the transaction terminates
    /// once this ACK is drained.
    pub fn set_ack(&mut self, now: Instant, ack: Vec<u8>) -> Result<(), TxError> {
        self.last_now = now;
        if self.kind != TxKind::Invite || self.state != ClientState::Completed || self.ack.is_some()
        {
            return Err(TxError::InvalidState(self.state.name()));
        }
        self.ack = Some(ack);
        self.send_ack = true;
        if self.reliable {
            self.terminate();
        }
        Ok(())
    }

    /// The TU sent a CANCEL for this INVITE (§9.1). In Proceeding an INVITE
    /// client transaction has no timer of its own (§17.1.1.2: Timer B only
    /// guards Calling), so a peer that never sends a final response would
    /// pin it; §9.1 lets the UAC give up 64*T1 after the CANCEL. This re-arms
    /// Timer B for that: if no final response arrives by then the
    /// transaction reports [`TxEvent::Timeout`] and terminates. Ignored in
    /// other states and for non-INVITE transactions.
    pub fn handle_cancel_sent(&mut self, now: Instant) {
        self.last_now = now;
        if self.kind == TxKind::Invite
            && matches!(self.state, ClientState::Calling | ClientState::Proceeding)
        {
            self.timers[ClientTimer::B as usize] = Some(now + self.cfg.timeout());
        }
    }

    /// The transport could not send the request (§17.1.4): inform the TU and
    /// terminate.
    pub fn handle_transport_error(&mut self, now: Instant) {
        self.last_now = now;
        if self.state == ClientState::Terminated {
            return;
        }
        self.events.push(TxEvent::TransportError);
        self.send_request = false;
        self.send_ack = false;
        self.terminate();
    }

    /// Fires every timer whose deadline is `<= now`, earliest first.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        // Each timer fires at most once per call: a re-armed A/E is at least
        // T1 in the future, so the loop is bounded by the number of timers.
        for _ in 0..ClientTimer::COUNT {
            let Some(i) = first_expired(&self.timers, now) else {
                return;
            };
            self.timers[i] = None;
            self.on_timer(now, ClientTimer::ALL[i]);
        }
    }

    fn on_timer(&mut self, now: Instant, timer: ClientTimer) {
        match (timer, self.state) {
            (ClientTimer::A, ClientState::Calling) => {
                // §17.1.1.2: retransmit, double the interval (no cap).
                self.retransmit(now, self.retransmit_interval * 2, ClientTimer::A);
            }
            (ClientTimer::E, ClientState::Trying) => {
                // §17.1.2.2: double, capped at T2.
                let next = (self.retransmit_interval * 2).min(self.cfg.t2);
                self.retransmit(now, next, ClientTimer::E);
            }
            (ClientTimer::E, ClientState::Proceeding) => {
                self.retransmit(now, self.cfg.t2, ClientTimer::E);
            }
            (ClientTimer::B, ClientState::Calling | ClientState::Proceeding)
            | (ClientTimer::F, ClientState::Trying | ClientState::Proceeding) => {
                self.events.push(TxEvent::Timeout);
                self.terminate();
            }
            (ClientTimer::D | ClientTimer::K, ClientState::Completed)
            | (ClientTimer::M, ClientState::Accepted) => self.terminate(),
            // A timer left over from an earlier state; every transition
            // clears the timers it ends, so this is not expected.
            _ => debug_assert!(false, "timer {timer:?} fired in {:?}", self.state),
        }
    }

    fn retransmit(&mut self, now: Instant, next: Duration, timer: ClientTimer) {
        self.send_request = true;
        self.retransmits = self.retransmits.saturating_add(1);
        self.retransmit_interval = next;
        self.timers[timer as usize] = Some(now + next);
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.timers = [None; ClientTimer::COUNT];
        self.events.push(TxEvent::Terminated);
    }

    /// The next datagram to send: the request (first send or a
    /// retransmission) or the ACK for a non-2xx final response.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        if self.send_request {
            self.send_request = false;
            return Some(&self.request);
        }
        if self.send_ack {
            self.send_ack = false;
            return self.ack.as_deref();
        }
        None
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop()
    }

    /// The earliest armed timer; `None` once Terminated.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&self.timers)
    }

    /// The deadline of one timer (for tests and diagnostics).
    pub fn timer(&self, timer: ClientTimer) -> Option<Instant> {
        self.timers[timer as usize]
    }
}

// ---------------------------------------------------------------------------
// Server transactions (§17.2)
// ---------------------------------------------------------------------------

/// Timers of a server transaction, indexing its timer array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum ServerTimer {
    /// INVITE final (non-2xx) response retransmit, T1 doubling capped at T2
    /// (§17.2.1).
    G = 0,
    /// Wait for ACK, 64*T1 (§17.2.1).
    H = 1,
    /// Wait for ACK retransmits in Confirmed: T4 unreliable, 0 reliable
    /// (§17.2.1).
    I = 2,
    /// Wait for request retransmits in Completed (non-INVITE): 64*T1
    /// unreliable, 0 reliable (§17.2.2).
    J = 3,
    /// Wait in Accepted for INVITE retransmits and TU 2xx retransmits,
    /// 64*T1 (RFC 6026 (amending §17.2.1)).
    L = 4,
    /// Send the TU-supplied 100 Trying if nothing was sent within 200 ms
    /// (§17.2.1).
    Trying = 5,
}

impl ServerTimer {
    /// Number of server timers.
    pub const COUNT: usize = 6;
    const ALL: [ServerTimer; Self::COUNT] = [
        ServerTimer::G,
        ServerTimer::H,
        ServerTimer::I,
        ServerTimer::J,
        ServerTimer::L,
        ServerTimer::Trying,
    ];
}

/// State of a server transaction (Figures 7 and 8, RFC 6026 Figure 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE request received, no response yet.
    Trying,
    /// INVITE received (or a provisional response sent).
    Proceeding,
    /// A 2xx was sent to an INVITE (RFC 6026).
    Accepted,
    /// A final (non-2xx for INVITE) response was sent.
    Completed,
    /// The ACK for a non-2xx final response arrived (INVITE only).
    Confirmed,
    /// Done; no further output.
    Terminated,
}

impl ServerState {
    fn name(self) -> &'static str {
        match self {
            ServerState::Trying => "Trying",
            ServerState::Proceeding => "Proceeding",
            ServerState::Accepted => "Accepted",
            ServerState::Completed => "Completed",
            ServerState::Confirmed => "Confirmed",
            ServerState::Terminated => "Terminated",
        }
    }
}

/// An RFC 3261 §17.2 server transaction (INVITE or non-INVITE).
///
/// The caller creates it when a request matches no transaction, passes the
/// request to the TU, and feeds retransmissions of the request
/// ([`handle_request_retransmit`](Self::handle_request_retransmit)) and ACKs
/// ([`handle_ack`](Self::handle_ack)) that match its key.
#[derive(Debug)]
pub struct ServerTransaction {
    kind: TxKind,
    state: ServerState,
    reliable: bool,
    cfg: TimerConfig,
    /// The last response sent (re-sent on request retransmission and Timer G).
    response: Vec<u8>,
    response_status: Option<u16>,
    /// TU-supplied 100 Trying, sent by [`ServerTimer::Trying`].
    trying: Option<Vec<u8>>,
    timers: [Option<Instant>; ServerTimer::COUNT],
    /// Current Timer G interval.
    retransmit_interval: Duration,
    send_response: bool,
    events: EventQueue,
    created: Instant,
    retransmits: u32,
    last_now: Instant,
}

impl ServerTransaction {
    /// Starts a server transaction for a request that matched none
    /// (§17.2.3). INVITE starts in Proceeding, anything else in Trying.
    pub fn new(now: Instant, kind: TxKind, reliable: bool, cfg: TimerConfig) -> Self {
        Self {
            kind,
            state: match kind {
                TxKind::Invite => ServerState::Proceeding,
                TxKind::NonInvite => ServerState::Trying,
            },
            reliable,
            cfg,
            response: Vec::new(),
            response_status: None,
            trying: None,
            timers: [None; ServerTimer::COUNT],
            retransmit_interval: cfg.t1,
            send_response: false,
            events: EventQueue::default(),
            created: now,
            retransmits: 0,
            last_now: now,
        }
    }

    /// INVITE only: the 100 Trying to send if the TU has sent nothing
    /// [`TRYING_DELAY`] after the INVITE arrived (§17.2.1). A TU that
    /// answers within 200 ms (or sends 100 itself) need not call this.
    pub fn set_auto_trying(&mut self, trying: Vec<u8>) -> Result<(), TxError> {
        if self.kind != TxKind::Invite
            || self.state != ServerState::Proceeding
            || self.response_status.is_some()
        {
            return Err(TxError::InvalidState(self.state.name()));
        }
        self.trying = Some(trying);
        self.timers[ServerTimer::Trying as usize] = Some(self.created + TRYING_DELAY);
        Ok(())
    }

    /// INVITE or non-INVITE.
    pub fn kind(&self) -> TxKind {
        self.kind
    }

    /// Current state.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// True once the machine reached Terminated.
    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }

    /// Status of the last response sent.
    pub fn last_status(&self) -> Option<u16> {
        self.response_status
    }

    /// Number of response retransmissions (Timer G and request
    /// retransmissions) so far.
    pub fn retransmits(&self) -> u32 {
        self.retransmits
    }

    /// Events lost because the driver did not drain [`poll_event`](Self::poll_event).
    pub fn events_dropped(&self) -> u32 {
        self.events.dropped
    }

    /// The TU sends a response (§17.2.1, §17.2.2). Errors are TU misuse:
    /// a bad status, or a response the state does not allow (the TU may only
    /// re-send 2xx in Accepted, RFC 6026 (amending §17.2.1)).
    pub fn send_response(
        &mut self,
        now: Instant,
        status: u16,
        response: &[u8],
    ) -> Result<(), TxError> {
        self.last_now = now;
        if !(100..=699).contains(&status) {
            return Err(TxError::BadStatus(status));
        }
        match (self.kind, self.state, status) {
            (TxKind::Invite, ServerState::Proceeding, 100..=199) => {}
            (TxKind::Invite, ServerState::Proceeding, 200..=299) => {
                self.state = ServerState::Accepted;
                self.timers[ServerTimer::L as usize] = Some(now + self.cfg.timeout());
            }
            (TxKind::Invite, ServerState::Proceeding, _) => {
                self.state = ServerState::Completed;
                if !self.reliable {
                    self.timers[ServerTimer::G as usize] = Some(now + self.cfg.t1);
                }
                self.timers[ServerTimer::H as usize] = Some(now + self.cfg.timeout());
            }
            // RFC 6026 (amending §17.2.1): the TU's 2xx retransmissions pass through.
            (TxKind::Invite, ServerState::Accepted, 200..=299) => {}
            (TxKind::NonInvite, ServerState::Trying | ServerState::Proceeding, 100..=199) => {
                self.state = ServerState::Proceeding;
            }
            (TxKind::NonInvite, ServerState::Trying | ServerState::Proceeding, _) => {
                self.store_response(status, response);
                if self.reliable {
                    // Timer J is zero on reliable transports.
                    self.terminate();
                } else {
                    self.state = ServerState::Completed;
                    self.timers[ServerTimer::J as usize] = Some(now + self.cfg.timeout());
                }
                return Ok(());
            }
            _ => return Err(TxError::InvalidState(self.state.name())),
        }
        self.timers[ServerTimer::Trying as usize] = None;
        self.trying = None;
        self.store_response(status, response);
        Ok(())
    }

    fn store_response(&mut self, status: u16, response: &[u8]) {
        // Reuse the buffer: responses of one transaction are of similar size.
        self.response.clear();
        self.response.extend_from_slice(response);
        self.response_status = Some(status);
        self.send_response = true;
    }

    /// A retransmission of the request arrived (§17.2.1, §17.2.2): re-send
    /// the last provisional or final response if the state says so, absorb
    /// it otherwise. Returns true if a response is queued.
    pub fn handle_request_retransmit(&mut self, now: Instant) -> bool {
        self.last_now = now;
        let resend = match self.state {
            // Proceeding re-sends the last provisional, if any.
            ServerState::Proceeding => self.response_status.is_some(),
            ServerState::Completed => true,
            // INVITE Accepted: the TU retransmits 2xx itself (RFC 6026 (amending §17.2.1));
            // Trying (non-INVITE, nothing sent yet), Confirmed, Terminated
            // absorb.
            _ => false,
        };
        if resend {
            self.send_response = true;
            self.retransmits = self.retransmits.saturating_add(1);
        }
        resend
    }

    /// An ACK matched this transaction (§17.2.3: an ACK for a non-2xx
    /// response carries the INVITE's branch). Returns true if the
    /// transaction absorbed it; false means the ACK is not the transaction's
    /// (an ACK for a 2xx in Accepted, or a non-INVITE transaction) and goes
    /// to the TU/dialog core (§13.3.1.4).
    pub fn handle_ack(&mut self, now: Instant) -> bool {
        self.last_now = now;
        if self.kind != TxKind::Invite {
            return false;
        }
        match self.state {
            ServerState::Completed => {
                self.timers[ServerTimer::G as usize] = None;
                self.timers[ServerTimer::H as usize] = None;
                if self.reliable {
                    // Timer I is zero on reliable transports.
                    self.terminate();
                } else {
                    self.state = ServerState::Confirmed;
                    self.timers[ServerTimer::I as usize] = Some(now + self.cfg.t4);
                }
                true
            }
            // Confirmed absorbs ACK retransmissions; a late ACK after
            // Terminated is absorbed too (nothing matches it otherwise).
            ServerState::Confirmed | ServerState::Terminated => true,
            _ => false,
        }
    }

    /// The transport could not send a response (§17.2.4).
    pub fn handle_transport_error(&mut self, now: Instant) {
        self.last_now = now;
        if self.state == ServerState::Terminated {
            return;
        }
        self.events.push(TxEvent::TransportError);
        self.send_response = false;
        self.terminate();
    }

    /// Fires every timer whose deadline is `<= now`, earliest first.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        for _ in 0..ServerTimer::COUNT {
            let Some(i) = first_expired(&self.timers, now) else {
                return;
            };
            self.timers[i] = None;
            self.on_timer(now, ServerTimer::ALL[i]);
        }
    }

    fn on_timer(&mut self, now: Instant, timer: ServerTimer) {
        match (timer, self.state) {
            (ServerTimer::G, ServerState::Completed) => {
                // §17.2.1: re-send the final response, min(2*G, T2).
                self.send_response = true;
                self.retransmits = self.retransmits.saturating_add(1);
                self.retransmit_interval = (self.retransmit_interval * 2).min(self.cfg.t2);
                self.timers[ServerTimer::G as usize] = Some(now + self.retransmit_interval);
            }
            (ServerTimer::H, ServerState::Completed) => {
                self.events.push(TxEvent::Timeout);
                self.terminate();
            }
            (ServerTimer::I, ServerState::Confirmed)
            | (ServerTimer::J, ServerState::Completed)
            | (ServerTimer::L, ServerState::Accepted) => self.terminate(),
            (ServerTimer::Trying, ServerState::Proceeding) => {
                if let Some(trying) = self.trying.take() {
                    self.response = trying;
                    self.response_status = Some(100);
                    self.send_response = true;
                }
            }
            _ => debug_assert!(false, "timer {timer:?} fired in {:?}", self.state),
        }
    }

    fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.timers = [None; ServerTimer::COUNT];
        self.trying = None;
        self.events.push(TxEvent::Terminated);
    }

    /// The next datagram to send: the last response (first send or a
    /// retransmission).
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        if self.send_response {
            self.send_response = false;
            return Some(&self.response);
        }
        None
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop()
    }

    /// The earliest armed timer; `None` once Terminated.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&self.timers)
    }

    /// The deadline of one timer (for tests and diagnostics).
    pub fn timer(&self, timer: ServerTimer) -> Option<Instant> {
        self.timers[timer as usize]
    }
}

// ---------------------------------------------------------------------------
// Matching (§17.1.3, §17.2.3)
// ---------------------------------------------------------------------------

/// Random hex characters after the magic cookie in a new branch: 64 bits,
/// so branches are unique over space and time as §8.1.1.7 requires.
const BRANCH_RANDOM_BYTES: usize = 8;

/// A fresh branch parameter for a new client transaction (§8.1.1.7):
/// `z9hG4bK` followed by 16 hex digits from the injected RNG.
pub fn new_branch<R: rand::RngCore + ?Sized>(rng: &mut R) -> String {
    let mut bytes = [0u8; BRANCH_RANDOM_BYTES];
    rng.fill_bytes(&mut bytes);
    let mut s = String::with_capacity(BRANCH_MAGIC_COOKIE.len() + 2 * BRANCH_RANDOM_BYTES);
    s.push_str(BRANCH_MAGIC_COOKIE);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Which side of the transaction layer a key belongs to. Client and server
/// keys live in one table but never match each other: our branches are ours,
/// the peer's are the peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxRole {
    /// We sent the request.
    Client,
    /// We received the request.
    Server,
}

/// A key that refused to build: the message cannot be matched with the
/// RFC 3261 rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxKeyError {
    /// The branch does not start with `z9hG4bK` (an RFC 2543 peer, §17.2.3
    /// fallback matching is not implemented): handle statelessly or reject.
    #[error("branch lacks the z9hG4bK magic cookie")]
    NoMagicCookie,
    /// The method token is empty.
    #[error("empty method")]
    EmptyMethod,
}

/// The identity of a transaction for matching messages to it.
///
/// * Client (§17.1.3): a response matches if the branch of its top Via
///   equals the request's and the CSeq method equals the request's method
///   (so the CANCEL, which shares the INVITE's branch, gets its own
///   transaction).
/// * Server (§17.2.3): branch, sent-by of the top Via and method, where an
///   ACK matches the INVITE transaction it acknowledges (only an ACK for a
///   non-2xx carries the INVITE's branch; an ACK for 2xx has a new branch
///   and matches nothing, going to the dialog instead).
///
/// Branches and methods compare exactly (methods are case-sensitive,
/// §7.1); the sent-by host is compared case-insensitively (it is a host
/// name, §19.1.4) and the port as given (absent is not 5060 here: both
/// sides of a retransmission carry the same Via).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    role: TxRole,
    branch: Box<str>,
    /// Lower-cased sent-by host and port; empty for client keys.
    sent_by: Box<str>,
    method: Box<str>,
}

impl TransactionKey {
    /// The key of a client transaction, also used to match its responses:
    /// the branch of our top Via and the request method (the response's
    /// CSeq method when matching).
    pub fn client(branch: &str, method: &str) -> Result<Self, TxKeyError> {
        Self::build(TxRole::Client, branch, "", method)
    }

    /// The key of a server transaction for a received request: top-Via
    /// branch, sent-by (`host` or `host:port` as in the Via) and the request
    /// method. An `ACK` key maps to the `INVITE` transaction (§17.2.3).
    pub fn server(branch: &str, sent_by: &str, method: &str) -> Result<Self, TxKeyError> {
        let method = if method == "ACK" { "INVITE" } else { method };
        Self::build(TxRole::Server, branch, sent_by, method)
    }

    fn build(role: TxRole, branch: &str, sent_by: &str, method: &str) -> Result<Self, TxKeyError> {
        if !branch.starts_with(BRANCH_MAGIC_COOKIE) {
            return Err(TxKeyError::NoMagicCookie);
        }
        if method.is_empty() {
            return Err(TxKeyError::EmptyMethod);
        }
        Ok(Self {
            role,
            branch: branch.into(),
            sent_by: sent_by.to_ascii_lowercase().into(),
            method: method.into(),
        })
    }

    /// For a CANCEL key, the key of the INVITE transaction it cancels
    /// (§9.2: same branch and sent-by, method INVITE); `None` for other
    /// methods.
    pub fn cancelled_invite(&self) -> Option<Self> {
        (&*self.method == "CANCEL").then(|| Self {
            method: "INVITE".into(),
            ..self.clone()
        })
    }

    /// Client or server.
    pub fn role(&self) -> TxRole {
        self.role
    }

    /// The branch parameter.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The method the transaction was created for (INVITE for an ACK key).
    pub fn method(&self) -> &str {
        &self.method
    }
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

/// Address of a transaction in a [`TransactionTable`]. Slots are reused
/// after [`TransactionTable::remove`], so a handle is only valid while the
/// transaction lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxHandle(pub u32);

/// A client or server transaction as stored in the table.
#[derive(Debug)]
pub enum Transaction {
    /// We sent the request.
    Client(ClientTransaction),
    /// We received the request.
    Server(ServerTransaction),
}

impl Transaction {
    /// Runs the machine's `handle_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            Transaction::Client(t) => t.handle_timeout(now),
            Transaction::Server(t) => t.handle_timeout(now),
        }
    }

    /// The machine's earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Transaction::Client(t) => t.poll_timeout(),
            Transaction::Server(t) => t.poll_timeout(),
        }
    }

    /// The machine's next datagram.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        match self {
            Transaction::Client(t) => t.poll_transmit(),
            Transaction::Server(t) => t.poll_transmit(),
        }
    }

    /// The machine's next event.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        match self {
            Transaction::Client(t) => t.poll_event(),
            Transaction::Server(t) => t.poll_event(),
        }
    }

    /// True once the machine reached Terminated.
    pub fn is_terminated(&self) -> bool {
        match self {
            Transaction::Client(t) => t.is_terminated(),
            Transaction::Server(t) => t.is_terminated(),
        }
    }
}

/// Why a transaction could not be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// Every slot is in use: answer the request with 503 (server side) or
    /// fail the call attempt (client side). SPEC: never grow.
    #[error("transaction table full")]
    Full,
    /// A transaction with this key exists (the caller should have matched
    /// the message to it).
    #[error("duplicate transaction key")]
    Duplicate,
}

#[derive(Debug)]
struct Entry {
    key: TransactionKey,
    tx: Transaction,
    /// The deadline currently registered in the heap for this slot.
    deadline: Option<Instant>,
}

/// A bounded slab of transactions with a key index and a deadline index.
///
/// Capacity is fixed at creation; every container is allocated then.
/// Deadlines are kept in a min-heap with lazy deletion: a heap entry is
/// live only if its slot still holds a transaction of the same generation
/// with that deadline. Stale entries are skipped when popped, and the heap
/// is rebuilt from the slots when it reaches [`HEAP_SLACK`] times the
/// capacity, so it never grows past its preallocated size.
#[derive(Debug)]
pub struct TransactionTable {
    /// Grows on demand up to `cap`: a table sized for RFC 6026's 32 s of
    /// lingering at thousands of calls per second is large, and most
    /// deployments never fill it.
    slots: Vec<Option<Entry>>,
    cap: usize,
    /// Bumped on every insert into a slot, so stale heap entries of a
    /// previous occupant never fire for the new one.
    generations: Vec<u32>,
    free: Vec<u32>,
    index: HashMap<TransactionKey, TxHandle>,
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
}

/// The heap holds at most this many entries per slot before it is rebuilt.
/// Each input re-arms at most one deadline per transaction, so 4 amortises
/// the O(n) rebuild over many updates while bounding memory.
pub const HEAP_SLACK: usize = 4;

impl TransactionTable {
    /// A table for at most `capacity` transactions (at most `u32::MAX`).
    pub fn new(capacity: usize) -> Self {
        assert!(capacity <= u32::MAX as usize, "capacity fits TxHandle");
        let start = capacity.min(1024);
        Self {
            slots: Vec::with_capacity(start),
            cap: capacity,
            generations: Vec::with_capacity(start),
            free: Vec::new(),
            index: HashMap::with_capacity(start),
            heap: BinaryHeap::with_capacity(start * HEAP_SLACK + 1),
        }
    }

    /// Maximum number of transactions.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Number of transactions stored.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True if no transaction is stored.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Stores a transaction under `key`.
    pub fn insert(&mut self, key: TransactionKey, tx: Transaction) -> Result<TxHandle, TableError> {
        if self.index.contains_key(&key) {
            return Err(TableError::Duplicate);
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.slots.len() < self.cap => {
                self.slots.push(None);
                self.generations.push(0);
                (self.slots.len() - 1) as u32
            }
            None => return Err(TableError::Full),
        };
        let h = TxHandle(slot);
        let i = slot as usize;
        debug_assert!(self.slots[i].is_none(), "free slot is empty");
        self.generations[i] = self.generations[i].wrapping_add(1);
        self.index.insert(key.clone(), h);
        self.slots[i] = Some(Entry {
            key,
            tx,
            deadline: None,
        });
        self.reindex(h);
        Ok(h)
    }

    /// The transaction matching `key`.
    pub fn find(&self, key: &TransactionKey) -> Option<TxHandle> {
        self.index.get(key).copied()
    }

    /// Read access to a transaction.
    pub fn get(&self, h: TxHandle) -> Option<&Transaction> {
        self.slots.get(h.0 as usize)?.as_ref().map(|e| &e.tx)
    }

    /// The key a transaction was stored under.
    pub fn key(&self, h: TxHandle) -> Option<&TransactionKey> {
        self.slots.get(h.0 as usize)?.as_ref().map(|e| &e.key)
    }

    /// Runs `f` on a transaction and re-registers its deadline afterwards
    /// (the only way to mutate one, so the deadline index stays right).
    pub fn update<R>(&mut self, h: TxHandle, f: impl FnOnce(&mut Transaction) -> R) -> Option<R> {
        let entry = self.slots.get_mut(h.0 as usize)?.as_mut()?;
        let r = f(&mut entry.tx);
        self.reindex(h);
        Some(r)
    }

    /// Removes a transaction (normally after its [`TxEvent::Terminated`] and
    /// once its transmits are drained).
    pub fn remove(&mut self, h: TxHandle) -> Option<Transaction> {
        let entry = self.slots.get_mut(h.0 as usize)?.take()?;
        let removed = self.index.remove(&entry.key);
        debug_assert_eq!(removed, Some(h), "index and slab agree");
        self.free.push(h.0);
        // Its heap entries are now stale and will be skipped.
        Some(entry.tx)
    }

    /// The earliest deadline over all transactions.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// If some transaction's deadline is `<= now`, runs its
    /// `handle_timeout(now)` and returns its handle so the caller drains its
    /// outputs (and removes it if it terminated). Call until `None`.
    pub fn poll_expired(&mut self, now: Instant) -> Option<TxHandle> {
        self.drop_stale();
        let Reverse((at, slot, _)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        let h = TxHandle(slot);
        if let Some(e) = self.slots[slot as usize].as_mut() {
            e.deadline = None;
            e.tx.handle_timeout(now);
        }
        self.reindex(h);
        Some(h)
    }

    /// Pops heap entries that no longer describe their slot's deadline.
    fn drop_stale(&mut self) {
        while let Some(Reverse((at, slot, generation))) = self.heap.peek().copied() {
            if self.is_live(at, slot, generation) {
                return;
            }
            self.heap.pop();
        }
    }

    fn is_live(&self, at: Instant, slot: u32, generation: u32) -> bool {
        let i = slot as usize;
        self.generations[i] == generation
            && self.slots[i]
                .as_ref()
                .is_some_and(|e| e.deadline == Some(at))
    }

    fn reindex(&mut self, h: TxHandle) {
        let i = h.0 as usize;
        let Some(e) = self.slots[i].as_mut() else {
            return;
        };
        let next = e.tx.poll_timeout();
        if next == e.deadline {
            return;
        }
        e.deadline = next;
        if let Some(at) = next {
            if self.heap.len() >= self.slots.len() * HEAP_SLACK {
                self.rebuild_heap();
            }
            self.heap.push(Reverse((at, h.0, self.generations[i])));
        }
    }

    /// Drops every stale entry: at most one live entry per slot remains.
    fn rebuild_heap(&mut self) {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.retain(|Reverse((at, slot, g))| self.is_live(*at, *slot, *g));
        self.heap = BinaryHeap::from(entries);
        debug_assert!(self.heap.len() <= self.slots.len());
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cfg() -> TimerConfig {
        TimerConfig::default()
    }

    fn drain_tx(t: &mut ClientTransaction) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| t.poll_transmit().map(<[u8]>::to_vec)).collect()
    }

    fn drain_ev(t: &mut ClientTransaction) -> Vec<TxEvent> {
        std::iter::from_fn(|| t.poll_event()).collect()
    }

    fn drain_stx(t: &mut ServerTransaction) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| t.poll_transmit().map(<[u8]>::to_vec)).collect()
    }

    fn drain_sev(t: &mut ServerTransaction) -> Vec<TxEvent> {
        std::iter::from_fn(|| t.poll_event()).collect()
    }

    /// Steps a client machine from deadline to deadline until it is idle
    /// (or `limit` passes), recording (offset, bytes) of every transmit.
    fn run_client(
        t: &mut ClientTransaction,
        start: Instant,
        limit: Duration,
    ) -> Vec<(Duration, Vec<u8>)> {
        let mut sent = Vec::new();
        for _ in 0..1000 {
            let Some(at) = t.poll_timeout() else { break };
            if at - start > limit {
                break;
            }
            t.handle_timeout(at);
            for b in drain_tx(t) {
                sent.push((at - start, b));
            }
        }
        sent
    }

    #[test]
    fn invite_client_timer_a_doubles_and_b_times_out() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::Invite, b"INVITE".to_vec(), false, cfg());
        assert_eq!(drain_tx(&mut t), vec![b"INVITE".to_vec()]);
        assert_eq!(t.state(), ClientState::Calling);
        let sent = run_client(&mut t, t0, Duration::from_secs(100));
        let offsets: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
        // §17.1.1.2: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; B at 32 s.
        assert_eq!(offsets, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(t.retransmits(), 6);
        assert!(t.is_terminated());
        assert_eq!(
            drain_ev(&mut t),
            vec![TxEvent::Timeout, TxEvent::Terminated]
        );
        assert_eq!(TxEvent::Timeout.status(), Some(408));
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn invite_client_timer_b_is_64_t1() {
        let t0 = Instant::now();
        let t = ClientTransaction::new(t0, TxKind::Invite, vec![1], false, cfg());
        assert_eq!(t.timer(ClientTimer::B), Some(t0 + Duration::from_secs(32)));
        let c = TimerConfig {
            t1: Duration::from_millis(100),
            ..cfg()
        };
        let t = ClientTransaction::new(t0, TxKind::Invite, vec![1], false, c);
        assert_eq!(t.timer(ClientTimer::B), Some(t0 + 6400 * MS));
    }

    #[test]
    fn invite_client_provisional_stops_retransmits() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::Invite, vec![1], false, cfg());
        drain_tx(&mut t);
        t.handle_timeout(t0 + 500 * MS);
        assert_eq!(drain_tx(&mut t).len(), 1);
        t.handle_response(t0 + 600 * MS, 100);
        t.handle_response(t0 + 700 * MS, 180);
        t.handle_response(t0 + 800 * MS, 183);
        assert_eq!(t.state(), ClientState::Proceeding);
        assert_eq!(
            drain_ev(&mut t),
            vec![
                TxEvent::Provisional(100),
                TxEvent::Provisional(180),
                TxEvent::Provisional(183)
            ]
        );
        // No A, no B in Proceeding: the TU's own timer ends a ringing call.
        assert_eq!(t.poll_timeout(), None);
        assert_eq!(drain_tx(&mut t), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn invite_client_2xx_accepted_timer_m() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::Invite, vec![1], false, cfg());
        drain_tx(&mut t);
        t.handle_response(t0 + 100 * MS, 180);
        t.handle_response(t0 + 200 * MS, 200);
        assert_eq!(t.state(), ClientState::Accepted);
        // RFC 6026: every 2xx goes up (the TU re-sends its ACK); others are
        // discarded.
        t.handle_response(t0 + 700 * MS, 200);
        t.handle_response(t0 + 800 * MS, 486);
        t.handle_response(t0 + 900 * MS, 183);
        assert_eq!(
            drain_ev(&mut t),
            vec![
                TxEvent::Provisional(180),
                TxEvent::Final(200),
                TxEvent::Final(200)
            ]
        );
        // The transaction never sends the 2xx ACK itself.
        assert!(drain_tx(&mut t).is_empty());
        assert_eq!(t.poll_timeout(), Some(t0 + 200 * MS + 64 * 500 * MS));
        t.handle_timeout(t0 + 200 * MS + Duration::from_secs(32));
        assert!(t.is_terminated());
        assert_eq!(drain_ev(&mut t), vec![TxEvent::Terminated]);
        assert_eq!(t.final_status(), Some(200));
    }

    #[test]
    fn invite_client_cancel_bounds_proceeding() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::Invite, vec![1], false, cfg());
        drain_tx(&mut t);
        t.handle_response(t0 + 100 * MS, 180);
        assert_eq!(t.poll_timeout(), None);
        t.handle_cancel_sent(t0 + Duration::from_secs(60));
        let at = t0 + Duration::from_secs(92);
        assert_eq!(t.poll_timeout(), Some(at));
        t.handle_timeout(at);
        assert_eq!(
            drain_ev(&mut t),
            vec![
                TxEvent::Provisional(180),
                TxEvent::Timeout,
                TxEvent::Terminated
            ]
        );
        assert!(
            drain_tx(&mut t).is_empty(),
            "no retransmission in Proceeding"
        );
    }

    #[test]
    fn invite_client_2xx_directly_from_calling() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::Invite, vec![1], false, cfg());
        drain_tx(&mut t);
        t.handle_response(t0 + 100 * MS, 200);
        assert_eq!(t.state(), ClientState::Accepted);
        assert_eq!(t.timer(ClientTimer::A), None);
        assert_eq!(t.timer(ClientTimer::B), None);
        assert!(t.timer(ClientTimer::M).is_some());
    }

    #[test]
    fn invite_client_non_2xx_ack_and_timer_d() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::Invite, b"INV".to_vec(), false, cfg());
        drain_tx(&mut t);
        t.handle_response(t0 + 100 * MS, 486);
        assert_eq!(t.state(), ClientState::Completed);
        assert_eq!(
            drain_ev(&mut t),
            vec![TxEvent::Final(486), TxEvent::AckRequired]
        );
        // A retransmission before the TU supplies the ACK sends nothing.
        t.handle_response(t0 + 150 * MS, 486);
        assert!(drain_tx(&mut t).is_empty());
        t.set_ack(t0 + 200 * MS, b"ACK".to_vec()).unwrap();
        assert_eq!(drain_tx(&mut t), vec![b"ACK".to_vec()]);
        assert!(t.set_ack(t0 + 200 * MS, b"ACK".to_vec()).is_err());
        // Each retransmitted final response re-sends the ACK, silently.
        t.handle_response(t0 + 600 * MS, 486);
        t.handle_response(t0 + 1600 * MS, 486);
        assert_eq!(drain_tx(&mut t), vec![b"ACK".to_vec()]);
        t.handle_response(t0 + 1700 * MS, 486);
        assert_eq!(drain_tx(&mut t), vec![b"ACK".to_vec()]);
        assert!(drain_ev(&mut t).is_empty());
        // Timer D: 32 s after the first final response.
        assert_eq!(
            t.poll_timeout(),
            Some(t0 + 100 * MS + Duration::from_secs(32))
        );
        t.handle_timeout(t0 + 100 * MS + Duration::from_secs(32));
        assert!(t.is_terminated());
        assert_eq!(drain_ev(&mut t), vec![TxEvent::Terminated]);
        // Nothing after Terminated.
        t.handle_response(t0 + Duration::from_secs(40), 486);
        assert!(drain_tx(&mut t).is_empty());
        assert!(drain_ev(&mut t).is_empty());
    }

    #[test]
    fn invite_client_reliable() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::Invite, vec![1], true, cfg());
        drain_tx(&mut t);
        // No Timer A; Timer B still runs.
        assert_eq!(t.timer(ClientTimer::A), None);
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        t.handle_response(t0 + 100 * MS, 503);
        assert_eq!(
            drain_ev(&mut t),
            vec![TxEvent::Final(503), TxEvent::AckRequired]
        );
        t.set_ack(t0 + 110 * MS, b"ACK".to_vec()).unwrap();
        // Timer D is zero: terminated, with the ACK still to drain.
        assert!(t.is_terminated());
        assert_eq!(drain_tx(&mut t), vec![b"ACK".to_vec()]);
        assert_eq!(drain_ev(&mut t), vec![TxEvent::Terminated]);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn invite_client_reliable_timeout() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::Invite, vec![1], true, cfg());
        drain_tx(&mut t);
        let sent = run_client(&mut t, t0, Duration::from_secs(100));
        assert!(sent.is_empty(), "no retransmissions on TCP");
        assert_eq!(
            drain_ev(&mut t),
            vec![TxEvent::Timeout, TxEvent::Terminated]
        );
    }

    #[test]
    fn non_invite_client_timer_e_capped_at_t2() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::NonInvite, vec![1], false, cfg());
        drain_tx(&mut t);
        let sent = run_client(&mut t, t0, Duration::from_secs(100));
        let offsets: Vec<u64> = sent.iter().map(|(d, _)| d.as_millis() as u64).collect();
        // 500, 1000, 2000, 4000, 4000... ms intervals; F at 32 s.
        assert_eq!(
            offsets,
            vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(
            drain_ev(&mut t),
            vec![TxEvent::Timeout, TxEvent::Terminated]
        );
    }

    #[test]
    fn non_invite_client_proceeding_uses_t2() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::NonInvite, vec![1], false, cfg());
        drain_tx(&mut t);
        t.handle_timeout(t0 + 500 * MS); // next E at 1500
        t.handle_response(t0 + 600 * MS, 100);
        assert_eq!(t.state(), ClientState::Proceeding);
        t.handle_timeout(t0 + 1500 * MS);
        // In Proceeding Timer E re-arms with T2.
        assert_eq!(t.timer(ClientTimer::E), Some(t0 + 5500 * MS));
        // Two undrained retransmissions of the same bytes merge into one.
        assert_eq!(drain_tx(&mut t).len(), 1);
        assert_eq!(t.retransmits(), 2);
        // F is still running in Proceeding.
        assert_eq!(t.timer(ClientTimer::F), Some(t0 + Duration::from_secs(32)));
    }

    #[test]
    fn non_invite_client_final_timer_k() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::NonInvite, vec![1], false, cfg());
        drain_tx(&mut t);
        t.handle_response(t0 + 100 * MS, 200);
        assert_eq!(t.state(), ClientState::Completed);
        t.handle_response(t0 + 200 * MS, 200); // absorbed
        assert_eq!(drain_ev(&mut t), vec![TxEvent::Final(200)]);
        assert_eq!(t.poll_timeout(), Some(t0 + 5100 * MS));
        t.handle_timeout(t0 + 5100 * MS);
        assert_eq!(drain_ev(&mut t), vec![TxEvent::Terminated]);
    }

    #[test]
    fn non_invite_client_reliable_timer_k_zero() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::NonInvite, vec![1], true, cfg());
        drain_tx(&mut t);
        assert_eq!(t.timer(ClientTimer::E), None);
        t.handle_response(t0 + 100 * MS, 404);
        assert!(t.is_terminated());
        assert_eq!(
            drain_ev(&mut t),
            vec![TxEvent::Final(404), TxEvent::Terminated]
        );
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn client_transport_error_and_garbage_status() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::NonInvite, vec![1], false, cfg());
        t.handle_response(t0, 0);
        t.handle_response(t0, 99);
        t.handle_response(t0, 700);
        assert_eq!(t.state(), ClientState::Trying);
        t.handle_transport_error(t0);
        assert!(drain_tx(&mut t).is_empty());
        assert_eq!(
            drain_ev(&mut t),
            vec![TxEvent::TransportError, TxEvent::Terminated]
        );
    }

    #[test]
    fn late_timeout_fires_earliest_first() {
        // The driver wakes long after both A and B expired: B wins, the
        // machine terminates without a burst of retransmissions.
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::Invite, vec![1], false, cfg());
        drain_tx(&mut t);
        t.handle_timeout(t0 + Duration::from_secs(60));
        assert!(t.is_terminated());
        assert_eq!(drain_tx(&mut t).len(), 1);
        assert_eq!(
            drain_ev(&mut t),
            vec![TxEvent::Timeout, TxEvent::Terminated]
        );
    }

    #[test]
    fn event_queue_is_bounded() {
        let t0 = Instant::now();
        let mut t = ClientTransaction::new(t0, TxKind::Invite, vec![1], false, cfg());
        for _ in 0..10 {
            t.handle_response(t0, 180);
        }
        assert_eq!(drain_ev(&mut t).len(), EVENTS_MAX);
        assert_eq!(t.events_dropped(), 10 - EVENTS_MAX as u32);
    }

    // --- server ---

    #[test]
    fn invite_server_non_2xx_timer_g_h() {
        let t0 = Instant::now();
        let mut s = ServerTransaction::new(t0, TxKind::Invite, false, cfg());
        assert_eq!(s.state(), ServerState::Proceeding);
        // Retransmitted INVITE before any response: absorbed.
        assert!(!s.handle_request_retransmit(t0 + 10 * MS));
        s.send_response(t0 + 20 * MS, 100, b"100").unwrap();
        assert_eq!(drain_stx(&mut s), vec![b"100".to_vec()]);
        // Now a retransmitted INVITE re-sends the last provisional.
        assert!(s.handle_request_retransmit(t0 + 30 * MS));
        assert_eq!(drain_stx(&mut s), vec![b"100".to_vec()]);
        s.send_response(t0 + 100 * MS, 486, b"486").unwrap();
        assert_eq!(s.state(), ServerState::Completed);
        assert_eq!(drain_stx(&mut s), vec![b"486".to_vec()]);
        assert!(s.send_response(t0 + 100 * MS, 500, b"500").is_err());
        // Timer G: 0.5, 1, 2, 4, 4, ... s (capped at T2) until H at 32 s.
        let mut offsets = Vec::new();
        while let Some(at) = s.poll_timeout() {
            s.handle_timeout(at);
            if !drain_stx(&mut s).is_empty() {
                offsets.push((at - (t0 + 100 * MS)).as_millis() as u64);
            }
        }
        assert_eq!(
            offsets,
            vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(
            drain_sev(&mut s),
            vec![TxEvent::Timeout, TxEvent::Terminated]
        );
    }

    #[test]
    fn invite_server_ack_absorbed_timer_i() {
        let t0 = Instant::now();
        let mut s = ServerTransaction::new(t0, TxKind::Invite, false, cfg());
        s.send_response(t0, 404, b"404").unwrap();
        drain_stx(&mut s);
        assert!(s.handle_request_retransmit(t0 + 100 * MS));
        assert_eq!(drain_stx(&mut s), vec![b"404".to_vec()]);
        assert!(s.handle_ack(t0 + 200 * MS));
        assert_eq!(s.state(), ServerState::Confirmed);
        assert_eq!(s.timer(ServerTimer::G), None);
        assert_eq!(s.timer(ServerTimer::H), None);
        // Retransmitted ACKs and INVITEs are absorbed in Confirmed.
        assert!(s.handle_ack(t0 + 300 * MS));
        assert!(!s.handle_request_retransmit(t0 + 300 * MS));
        assert!(drain_stx(&mut s).is_empty());
        assert_eq!(s.poll_timeout(), Some(t0 + 5200 * MS));
        s.handle_timeout(t0 + 5200 * MS);
        assert_eq!(drain_sev(&mut s), vec![TxEvent::Terminated]);
    }

    #[test]
    fn invite_server_reliable() {
        let t0 = Instant::now();
        let mut s = ServerTransaction::new(t0, TxKind::Invite, true, cfg());
        s.send_response(t0, 480, b"480").unwrap();
        drain_stx(&mut s);
        // No Timer G on TCP; H still guards the ACK.
        assert_eq!(s.timer(ServerTimer::G), None);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        assert!(s.handle_ack(t0 + 50 * MS));
        // Timer I is zero.
        assert!(s.is_terminated());
        assert_eq!(drain_sev(&mut s), vec![TxEvent::Terminated]);
    }

    #[test]
    fn invite_server_2xx_accepted_timer_l() {
        let t0 = Instant::now();
        let mut s = ServerTransaction::new(t0, TxKind::Invite, false, cfg());
        s.send_response(t0, 180, b"180").unwrap();
        s.send_response(t0 + 10 * MS, 200, b"200").unwrap();
        assert_eq!(s.state(), ServerState::Accepted);
        assert_eq!(drain_stx(&mut s), vec![b"200".to_vec()]);
        // INVITE retransmissions are absorbed: the TU retransmits 2xx.
        assert!(!s.handle_request_retransmit(t0 + 500 * MS));
        assert!(drain_stx(&mut s).is_empty());
        s.send_response(t0 + 510 * MS, 200, b"200").unwrap();
        assert_eq!(drain_stx(&mut s), vec![b"200".to_vec()]);
        assert!(s.send_response(t0 + 520 * MS, 486, b"486").is_err());
        // The ACK for a 2xx is the dialog's, not the transaction's.
        assert!(!s.handle_ack(t0 + 600 * MS));
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + 10 * MS + Duration::from_secs(32))
        );
        s.handle_timeout(t0 + 10 * MS + Duration::from_secs(32));
        assert_eq!(drain_sev(&mut s), vec![TxEvent::Terminated]);
    }

    #[test]
    fn invite_server_auto_trying() {
        let t0 = Instant::now();
        let mut s = ServerTransaction::new(t0, TxKind::Invite, false, cfg());
        s.set_auto_trying(b"100".to_vec()).unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + 200 * MS));
        s.handle_timeout(t0 + 200 * MS);
        assert_eq!(drain_stx(&mut s), vec![b"100".to_vec()]);
        assert_eq!(s.last_status(), Some(100));
        assert!(s.handle_request_retransmit(t0 + 300 * MS));
        assert_eq!(drain_stx(&mut s), vec![b"100".to_vec()]);

        // A TU that answers first cancels it.
        let mut s = ServerTransaction::new(t0, TxKind::Invite, false, cfg());
        s.set_auto_trying(b"100".to_vec()).unwrap();
        s.send_response(t0 + 50 * MS, 180, b"180").unwrap();
        assert_eq!(s.timer(ServerTimer::Trying), None);
        assert_eq!(drain_stx(&mut s), vec![b"180".to_vec()]);
        assert!(s.set_auto_trying(b"100".to_vec()).is_err());
    }

    #[test]
    fn non_invite_server_timer_j() {
        let t0 = Instant::now();
        let mut s = ServerTransaction::new(t0, TxKind::NonInvite, false, cfg());
        assert_eq!(s.state(), ServerState::Trying);
        assert!(!s.handle_request_retransmit(t0));
        s.send_response(t0 + 10 * MS, 100, b"100").unwrap();
        assert_eq!(s.state(), ServerState::Proceeding);
        assert!(s.handle_request_retransmit(t0 + 20 * MS));
        assert_eq!(drain_stx(&mut s), vec![b"100".to_vec()]);
        s.send_response(t0 + 30 * MS, 200, b"200 OK").unwrap();
        assert_eq!(s.state(), ServerState::Completed);
        assert!(s.handle_request_retransmit(t0 + 40 * MS));
        assert_eq!(drain_stx(&mut s), vec![b"200 OK".to_vec()]);
        assert_eq!(s.retransmits(), 2);
        assert!(!s.handle_ack(t0 + 40 * MS));
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + 30 * MS + Duration::from_secs(32))
        );
        s.handle_timeout(t0 + 30 * MS + Duration::from_secs(32));
        assert_eq!(drain_sev(&mut s), vec![TxEvent::Terminated]);
    }

    #[test]
    fn non_invite_server_reliable_timer_j_zero() {
        let t0 = Instant::now();
        let mut s = ServerTransaction::new(t0, TxKind::NonInvite, true, cfg());
        s.send_response(t0, 200, b"200").unwrap();
        assert!(s.is_terminated());
        assert_eq!(drain_stx(&mut s), vec![b"200".to_vec()]);
        assert_eq!(drain_sev(&mut s), vec![TxEvent::Terminated]);
        assert_eq!(s.poll_timeout(), None);
        assert!(s.send_response(t0, 200, b"200").is_err());
    }

    #[test]
    fn server_bad_status_and_transport_error() {
        let t0 = Instant::now();
        let mut s = ServerTransaction::new(t0, TxKind::Invite, false, cfg());
        assert_eq!(s.send_response(t0, 99, b"x"), Err(TxError::BadStatus(99)));
        assert_eq!(s.send_response(t0, 700, b"x"), Err(TxError::BadStatus(700)));
        s.send_response(t0, 500, b"500").unwrap();
        s.handle_transport_error(t0);
        assert!(drain_stx(&mut s).is_empty());
        assert_eq!(
            drain_sev(&mut s),
            vec![TxEvent::TransportError, TxEvent::Terminated]
        );
    }

    /// Random input sequences (seeded): the machines never panic, never
    /// produce output after Terminated (other than transmits queued by the
    /// input that terminated them), and always terminate once time runs
    /// far enough (STYLE §7 properties).
    #[test]
    fn random_inputs_are_safe() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3261);
        let statuses = [100, 180, 183, 200, 202, 302, 404, 486, 503, 603, 0, 999];
        for round in 0..2000 {
            let t0 = Instant::now();
            let kind = if round % 2 == 0 {
                TxKind::Invite
            } else {
                TxKind::NonInvite
            };
            let reliable = rng.gen_bool(0.3);
            let mut now = t0;
            let mut c = ClientTransaction::new(now, kind, vec![1], reliable, cfg());
            let mut s = ServerTransaction::new(now, kind, reliable, cfg());
            if kind == TxKind::Invite && rng.gen_bool(0.5) {
                s.set_auto_trying(vec![100]).unwrap();
            }
            for _ in 0..30 {
                now += Duration::from_millis(rng.gen_range(0..3000));
                let c_was_done = c.is_terminated();
                let s_was_done = s.is_terminated();
                match rng.gen_range(0..6) {
                    0 => c.handle_response(now, statuses[rng.gen_range(0..statuses.len())]),
                    1 => {
                        let _ = c.set_ack(now, vec![2]);
                    }
                    2 => {
                        let st = statuses[rng.gen_range(0..statuses.len())];
                        let _ = s.send_response(now, st, &[3]);
                    }
                    3 => {
                        s.handle_request_retransmit(now);
                    }
                    4 => {
                        s.handle_ack(now);
                    }
                    _ => {
                        c.handle_timeout(now);
                        s.handle_timeout(now);
                    }
                }
                let (ctx, cev) = (drain_tx(&mut c), drain_ev(&mut c));
                let (stx, sev) = (drain_stx(&mut s), drain_sev(&mut s));
                if c_was_done {
                    assert!(
                        ctx.is_empty() && cev.is_empty(),
                        "client output after Terminated"
                    );
                }
                if s_was_done {
                    assert!(
                        stx.is_empty() && sev.is_empty(),
                        "server output after Terminated"
                    );
                }
                assert!(cev.len() <= EVENTS_MAX && sev.len() <= EVENTS_MAX);
                assert_eq!(c.events_dropped() + s.events_dropped(), 0);
            }
            // Everything ends: at most 64*T1 + T4 after the last input, a
            // TU that supplies the ACK and sends a final response.
            c.handle_cancel_sent(now);
            let _ = c.set_ack(now, vec![2]);
            let _ = s.send_response(now, 500, &[3]);
            for _ in 0..100 {
                let next = [c.poll_timeout(), s.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                let Some(at) = next else { break };
                c.handle_timeout(at);
                s.handle_timeout(at);
                drain_tx(&mut c);
                drain_stx(&mut s);
            }
            assert!(c.is_terminated(), "client {:?} stuck", c.state());
            assert!(s.is_terminated(), "server {:?} stuck", s.state());
        }
    }

    #[test]
    fn branches_are_fresh() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let a = new_branch(&mut rng);
        let b = new_branch(&mut rng);
        assert!(a.starts_with(BRANCH_MAGIC_COOKIE));
        assert_eq!(a.len(), 7 + 16);
        assert_ne!(a, b);
        assert!(TransactionKey::client(&a, "INVITE").is_ok());
    }

    // --- keys ---

    #[test]
    fn key_matching_rules() {
        let inv = TransactionKey::server("z9hG4bK776", "PC33.atlanta.com:5060", "INVITE").unwrap();
        let ack = TransactionKey::server("z9hG4bK776", "pc33.atlanta.com:5060", "ACK").unwrap();
        let cancel =
            TransactionKey::server("z9hG4bK776", "pc33.atlanta.com:5060", "CANCEL").unwrap();
        // An ACK for a non-2xx matches the INVITE server transaction.
        assert_eq!(inv, ack);
        // A CANCEL has its own transaction but finds the INVITE.
        assert_ne!(inv, cancel);
        assert_eq!(cancel.cancelled_invite(), Some(inv.clone()));
        assert_eq!(inv.cancelled_invite(), None);
        // Different sent-by, branch or port: different transaction.
        assert_ne!(
            inv,
            TransactionKey::server("z9hG4bK776", "pc33.atlanta.com:5062", "INVITE").unwrap()
        );
        assert_ne!(
            inv,
            TransactionKey::server("z9hG4bK777", "pc33.atlanta.com:5060", "INVITE").unwrap()
        );
        // Client and server keys never match.
        let c = TransactionKey::client("z9hG4bK776", "INVITE").unwrap();
        assert_ne!(c.role(), inv.role());
        assert_ne!(TransactionKey::client("z9hG4bK776", "CANCEL").unwrap(), c);
        assert_eq!(
            TransactionKey::server("abc", "h", "INVITE"),
            Err(TxKeyError::NoMagicCookie)
        );
        assert_eq!(
            TransactionKey::client("z9hG4bKx", ""),
            Err(TxKeyError::EmptyMethod)
        );
    }

    // --- table ---

    fn client(now: Instant, kind: TxKind) -> Transaction {
        Transaction::Client(ClientTransaction::new(now, kind, vec![1], false, cfg()))
    }

    #[test]
    fn table_capacity_limit() {
        let t0 = Instant::now();
        let mut table = TransactionTable::new(2);
        let k = |b: &str| TransactionKey::client(b, "OPTIONS").unwrap();
        let a = table
            .insert(k("z9hG4bKa"), client(t0, TxKind::NonInvite))
            .unwrap();
        assert_eq!(
            table.insert(k("z9hG4bKa"), client(t0, TxKind::NonInvite)),
            Err(TableError::Duplicate)
        );
        table
            .insert(k("z9hG4bKb"), client(t0, TxKind::NonInvite))
            .unwrap();
        assert_eq!(
            table.insert(k("z9hG4bKc"), client(t0, TxKind::NonInvite)),
            Err(TableError::Full)
        );
        assert_eq!(table.len(), 2);
        assert!(table.remove(a).is_some());
        assert!(table.remove(a).is_none());
        assert_eq!(table.find(&k("z9hG4bKa")), None);
        let c = table
            .insert(k("z9hG4bKc"), client(t0, TxKind::NonInvite))
            .unwrap();
        assert_eq!(c, a, "slot reused");
        assert_eq!(table.find(&k("z9hG4bKc")), Some(c));
        assert_eq!(table.capacity(), 2);
    }

    #[test]
    fn table_earliest_deadline_and_expiry() {
        let t0 = Instant::now();
        let mut table = TransactionTable::new(8);
        let inv = table
            .insert(
                TransactionKey::client("z9hG4bK1", "INVITE").unwrap(),
                client(t0, TxKind::Invite),
            )
            .unwrap();
        let s = table
            .insert(
                TransactionKey::server("z9hG4bK2", "h:5060", "BYE").unwrap(),
                Transaction::Server(ServerTransaction::new(t0, TxKind::NonInvite, false, cfg())),
            )
            .unwrap();
        // The server transaction has no timer yet; the INVITE's A is first.
        assert_eq!(table.poll_timeout(), Some(t0 + 500 * MS));
        assert_eq!(table.poll_expired(t0 + 499 * MS), None);
        assert_eq!(table.poll_expired(t0 + 500 * MS), Some(inv));
        assert_eq!(table.poll_expired(t0 + 500 * MS), None);
        assert_eq!(table.poll_timeout(), Some(t0 + 1500 * MS));
        // A 2xx moves the INVITE to Accepted: Timer M replaces A.
        table
            .update(inv, |t| match t {
                Transaction::Client(c) => c.handle_response(t0 + 600 * MS, 200),
                Transaction::Server(_) => unreachable!("inv is a client"),
            })
            .unwrap();
        table
            .update(s, |t| match t {
                Transaction::Server(s) => s.send_response(t0 + 700 * MS, 200, b"ok").unwrap(),
                Transaction::Client(_) => unreachable!("s is a server"),
            })
            .unwrap();
        assert_eq!(
            table.poll_timeout(),
            Some(t0 + 600 * MS + Duration::from_secs(32))
        );
        // Drive to idle, removing terminated transactions.
        let mut now = t0;
        for _ in 0..100 {
            let Some(at) = table.poll_timeout() else {
                break;
            };
            now = at;
            while let Some(h) = table.poll_expired(now) {
                let done = table.update(h, |t| t.is_terminated()).unwrap();
                if done {
                    table.remove(h);
                }
            }
        }
        assert!(table.is_empty());
        assert_eq!(now, t0 + 700 * MS + Duration::from_secs(32));
        assert_eq!(table.poll_timeout(), None);
    }

    #[test]
    fn table_heap_stays_bounded() {
        let t0 = Instant::now();
        let mut table = TransactionTable::new(4);
        let keep = table
            .insert(
                TransactionKey::client("z9hG4bKkeep", "INVITE").unwrap(),
                client(t0 + Duration::from_secs(1), TxKind::Invite),
            )
            .unwrap();
        // Churn: short-lived transactions leave stale heap entries behind
        // (removal is lazy); the heap is rebuilt before it outgrows its
        // preallocated size.
        for i in 0..200u32 {
            let key = TransactionKey::client(&format!("z9hG4bK{i}"), "OPTIONS").unwrap();
            let h = table.insert(key, client(t0, TxKind::NonInvite)).unwrap();
            assert!(table.heap.len() <= 4 * HEAP_SLACK);
            table.remove(h);
        }
        // Stale entries never surface: the kept INVITE's Timer A is next.
        assert_eq!(table.poll_timeout(), Some(t0 + 1500 * MS));
        assert_eq!(table.poll_expired(t0 + 1500 * MS), Some(keep));
        assert_eq!(table.poll_expired(t0 + 1500 * MS), None);
    }
}
