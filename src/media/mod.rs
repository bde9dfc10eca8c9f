//! The media plane's sans-IO parts: RTP/RTCP views, per-leg statistics and
//! the relay table that the shard loop drives.

pub mod relay;
pub mod rtp;
pub mod srtp;
pub mod stats;
