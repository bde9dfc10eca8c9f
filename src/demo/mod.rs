//! `kolokol demo` and what it needs: a simulated carrier on loopback
//! ([`carrier::SimCarrier`]) that answers the gateway's calls, plays audio
//! and presses keys, so both portal flows can be shown (and tested) on one
//! machine with nothing else installed.

pub mod carrier;
pub mod client;
pub mod run;
