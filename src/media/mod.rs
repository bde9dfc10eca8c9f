//! The media plane's sans-IO parts: RTP/RTCP views, per-leg statistics,
//! the relay table that the shard loop drives, and what the call flows need
//! on top of relaying (SPEC F-M6): recorded prompts ([`prompt`]), paced
//! playback ([`play`]) and RFC 4733 DTMF detection ([`dtmf`]).

pub mod dtmf;
pub mod play;
pub mod prompt;
mod prompt_embedded;
pub mod relay;
pub mod rtp;
pub mod srtp;
pub mod stats;
pub mod xdp;
