//! Calls: the B2BUA that bridges an inbound leg (A) to an outbound trunk
//! leg (B) with the relay in between (SPEC F-S3 to F-S6), and the calls
//! the control plane places through the same trunks ([`originate`]).
//!
//! Sans-IO like [`crate::sip`]: [`b2bua::B2bua`] takes the
//! [`crate::sip::endpoint::Event`]s of the shard's
//! [`crate::sip::endpoint::SipEndpoint`] and the shell's answers to its
//! requests, and gives back SIP actions, media requests, call records and
//! origination events to poll. It never reads the clock or touches a
//! socket.

pub mod b2bua;
pub mod flow;
pub mod originate;

pub use b2bua::{
    B2bua, B2buaConfig, B2buaCounters, BridgeId, CallRecord, Hangup, MediaRequest, OutboundInvite,
    Output, ReofferMethod, SipAction,
};
pub use originate::{
    CallOrigin, HangupError, NumberError, OriginateError, OriginateRequest, OriginationEvent,
    OriginationEventKind, OriginationId,
};
