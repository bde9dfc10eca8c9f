//! SIP signalling (issue 4, SPEC F-S2/F-S4), sans-IO.
//!
//! Nothing here parses SIP messages: the transaction, dialog and digest
//! machines take the few fields they need as plain values and treat
//! messages as opaque serialized bytes, so they are independent of the
//! message parser.

pub mod dialog;
pub mod digest;
pub mod transaction;
