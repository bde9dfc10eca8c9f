//! SIP signalling (RFC 3261), sans-IO (issue 4, SPEC F-S1 … F-S7).
//!
//! The message layer: [`msg::SipMessage`] parses one datagram without
//! copying (start line, ordered header index, body framed by
//! Content-Length) and validates what the transaction and dialog layers
//! rely on; [`header`] has the value grammars (Via, name-addr, parameters,
//! comma lists, compact header names); [`uri`] parses `sip:`/`sips:` URIs
//! and keeps other schemes opaque; [`build`] writes requests, responses
//! (RFC 3261 §8.2.6) and edited copies of received messages into a
//! caller-supplied buffer.
//!
//! The machines: [`transaction`] has the four RFC 3261 §17 transaction
//! state machines (with RFC 6026) and a bounded transaction table;
//! [`dialog`] the §12 dialog state; [`digest`] HTTP digest authentication
//! toward trunks (MD5, SHA-256). They take the few fields they need as
//! plain values and treat messages as opaque bytes, so they do not depend
//! on the parser.
//!
//! Malformed input is answered or dropped, never a panic: every refusal is
//! a [`msg::SipParseError`] that says which status to answer with (400,
//! 501, 505, 513) or that the message is to be discarded. The RFC 4475
//! torture messages are the test vectors (`tests/sip_torture.rs`).
//!
//! The glue: [`endpoint::SipEndpoint`] is the sans-IO endpoint one shard
//! owns; it routes datagrams to transactions and dialogs, answers what it
//! can itself (100, 481, 483, 420, 405/501, 503, OPTIONS, CANCEL, BYE) and
//! gives the transaction user call events and a UAS/UAC API.
//!
//! [`trunk`] selects trunks (priority, weight, limits, health,
//! failover) and routes by number prefix.
//!
//! [`stream::StreamFramer`] frames SIP messages and keep-alives on a
//! TCP/TLS byte stream (RFC 3261 §18.3, RFC 5626 §3.5.1), sans-IO.
//!
//! The transports (UDP sockets, TCP/TLS listeners and connections) are
//! the shard's: `crate::shard::sip` and `crate::shard::stream`. The
//! endpoint only names the transport of each message
//! ([`endpoint::Remote`]); the B2BUA is `crate::call`.

pub mod build;
pub mod dialog;
pub mod digest;
pub mod endpoint;
pub mod header;
pub mod msg;
pub mod stream;
pub mod transaction;
pub mod trunk;
pub mod uri;

pub use build::{response_to, BuildError, HeaderAction, MessageWriter, Reemit};
pub use header::{HeaderName, NameAddr, Params, Via};
pub use msg::{
    should_discard_response, Fault, Header, Method, SipMessage, SipParseError, StartLine,
};
pub use uri::{SipUri, Uri};
