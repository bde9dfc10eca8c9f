//! `BPF_PROG_TEST_RUN` of the relay program with an ingress interface, in
//! the ordinary mode (the program alone, nothing leaves) and with
//! `BPF_F_TEST_XDP_LIVE_FRAMES` (each run's frame really goes where the
//! program sends it: XDP_TX out of the ingress interface, XDP_REDIRECT out of
//! the target). Used by `src/bin/xdpcost.rs` to measure the program's own
//! cost per packet (issue 7).

use std::time::Duration;

use aya::{TestRun, TestRunAttrs, TestRunOptions};

use super::{error_chain, XdpError, XdpRelay, PROG_RELAY};

/// The kernel's `struct xdp_md` as `BPF_PROG_TEST_RUN` takes it in `ctx_in`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// The kernel's upper bound on a live-frames batch (`TEST_XDP_MAX_BATCH`).
pub const LIVE_BATCH_MAX: u32 = 256;

/// One test run's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The XDP action of the (last) run: 2 pass, 3 TX, 4 redirect.
    pub action: u32,
    /// The kernel's mean time per run (per frame).
    pub per_run: Duration,
}

impl XdpRelay {
    /// Run the relay program `repeat` times on `frame` as if it had arrived
    /// on interface `ingress_ifindex` (queue 0) of the calling thread's
    /// network namespace. With `live`, frames are really transmitted, in
    /// batches of `batch` (1..=[`LIVE_BATCH_MAX`]), and the time per run
    /// includes sending each frame on; otherwise it is the program alone.
    pub fn test_run_on(
        &mut self,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
        live: Option<u32>,
    ) -> Result<TestRunOutcome, XdpError> {
        let len =
            u32::try_from(frame.len()).map_err(|_| XdpError::Load("frame too long".into()))?;
        let md = XdpMd {
            data_end: len,
            ingress_ifindex,
            ..XdpMd::default()
        };
        // SAFETY: XdpMd is repr(C) plain u32s, no padding; the slice covers
        // exactly its bytes and lives as long as `md`.
        let ctx = unsafe {
            std::slice::from_raw_parts(
                (&md as *const XdpMd).cast::<u8>(),
                std::mem::size_of::<XdpMd>(),
            )
        };
        let mut out = vec![0u8; frame.len() + 256];
        let attrs = match live {
            Some(b) => {
                if !(1..=LIVE_BATCH_MAX).contains(&b) {
                    return Err(XdpError::Load(format!(
                        "live batch must be 1..={LIVE_BATCH_MAX}"
                    )));
                }
                TestRunAttrs::new().xdp_live_frames(b)
            }
            None => TestRunAttrs::new(),
        };
        let opts = TestRunOptions {
            data_in: Some(frame),
            // Live frames take no output buffer.
            data_out: if live.is_some() { None } else { Some(&mut out) },
            ctx_in: Some(ctx),
            ctx_out: None,
            repeat: repeat.max(1),
            attrs,
        };
        let prog = self.prog(PROG_RELAY)?;
        let r = prog
            .test_run(opts)
            .map_err(|e| XdpError::Load(error_chain(&e)))?;
        Ok(TestRunOutcome {
            action: r.return_value,
            per_run: r.duration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_md_is_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<XdpMd>(), 24);
    }
}
