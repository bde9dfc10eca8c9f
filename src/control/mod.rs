//! The control plane: everything that is not the packet path.
//!
//! [`ng`] speaks rtpengine's "ng" protocol so an existing SIP proxy
//! (Kamailio's `rtpengine` module) can drive Kolokol's media plane;
//! [`bencode`] is its wire encoding. [`api`] is the portal's HTTPS API
//! (calls, notifications, events, webhooks, metrics) on a thread of its
//! own.

pub mod api;
pub mod bencode;
pub mod engine;
pub mod ng;
pub mod sdes;
