//! Kolokol: a thread-per-core SIP/RTP media gateway on io_uring.
//!
//! # Architecture
//!
//! ```text
//!   ng clients (Kamailio rtpengine module, loadgen)     operators
//!            | bencode/UDP                                 | TOML
//!   +--------v-----------------------------------------+   |
//!   | control plane thread (control::ng)               |<--+
//!   |  call registry: call-id -> shard, SDP rewrite    |
//!   +---+------------------^---------------------------+
//!       | ShardCmd          | ShardEvent / replies
//!       | (bounded crossbeam queue + eventfd wake-up)
//!   +---v------------------+---+   +--------------------------+
//!   | shard 0 (pinned core 0)  |   | shard 1 (pinned core 1)  |
//!   |  io_uring: multishot     |   |  ...                     |
//!   |  recvmsg + provided bufs,|   |                          |
//!   |  fixed files, SendMsg    |   |                          |
//!   |  RelayTable (sans-IO)    |   |                          |
//!   |  ports slice 0, timers   |   |  ports slice 1           |
//!   +--------------------------+   +--------------------------+
//! ```
//!
//! A call's legs (both directions, RTP and RTCP) live on one shard; nothing
//! on the packet path is shared between cores.
//!
//! # The sans-IO contract
//!
//! Protocol logic ([`media::relay::RelayTable`], [`media::stats`],
//! [`sdp`], [`control::bencode`], [`sip`], [`call::B2bua`]) takes the
//! current time as an argument and never reads the clock, opens a socket or
//! spawns a thread. The shard loop in [`shard`] is the only driver on the
//! packet path: it reaps completions, reads the clock once per batch, feeds
//! each datagram to
//! [`media::relay::RelayTable::forward`], and turns the verdicts into send
//! operations. After any mutation the driver drains the machine's outputs
//! before it sleeps until the next deadline.

#![deny(missing_docs)]

pub mod call;
pub mod cdr;
pub mod config;
pub mod control;
pub mod demo;
pub mod gateway;
pub mod log;
pub mod media;
pub mod policy;
pub mod sdp;
pub mod shard;
pub mod sip;
pub mod sys;
