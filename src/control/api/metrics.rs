//! The API's own Prometheus metrics: requests by route, method and status,
//! a latency histogram by route, requests in flight, SSE clients.
//!
//! This is the control plane, not the packet path: a mutex around a small
//! map is cheaper than it looks at a few thousand requests per second, and
//! the label sets are bounded (route templates, never raw paths).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket upper bounds, seconds: from 0.5 ms (the engine's
/// typical answer) to 10 s (the request timeout).
pub const LATENCY_BUCKETS_S: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative), plus one for +Inf.
    counts: [u64; LATENCY_BUCKETS_S.len() + 1],
    sum_s: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    /// (route, method, status) -> count.
    requests: BTreeMap<(&'static str, String, u16), u64>,
    /// route -> latency.
    latency: BTreeMap<&'static str, Histogram>,
}

/// The API's counters.
#[derive(Default)]
pub struct ApiMetrics {
    inner: Mutex<Inner>,
    /// Requests being handled.
    pub in_flight: AtomicI64,
    /// Open `GET /v1/events` streams.
    pub sse_clients: AtomicI64,
}

impl ApiMetrics {
    /// Counts one finished request.
    pub fn observe(&self, route: &'static str, method: &str, status: u16, took: Duration) {
        // A poisoned lock only means another thread panicked mid-update of
        // plain counters; they are still usable.
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g.requests
            .entry((route, method.to_string(), status))
            .or_insert(0) += 1;
        let h = g.latency.entry(route).or_default();
        let s = took.as_secs_f64();
        let i = LATENCY_BUCKETS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        h.counts[i] += 1;
        h.sum_s += s;
        h.count += 1;
    }

    /// Appends the Prometheus text exposition of the API metrics.
    pub fn write(&self, out: &mut String) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str(
            "# HELP kolokol_api_requests_total API requests by route, method and status.\n",
        );
        out.push_str("# TYPE kolokol_api_requests_total counter\n");
        for ((route, method, status), n) in &g.requests {
            let _ = writeln!(
                out,
                "kolokol_api_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP kolokol_api_request_duration_seconds Time to the response head, by route.\n",
        );
        out.push_str("# TYPE kolokol_api_request_duration_seconds histogram\n");
        for (route, h) in &g.latency {
            let mut cum = 0;
            for (i, b) in LATENCY_BUCKETS_S.iter().enumerate() {
                cum += h.counts[i];
                let _ = writeln!(
                    out,
                    "kolokol_api_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {cum}"
                );
            }
            let _ = writeln!(
                out,
                "kolokol_api_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "kolokol_api_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum_s
            );
            let _ = writeln!(
                out,
                "kolokol_api_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        drop(g);
        out.push_str("# HELP kolokol_api_requests_in_flight API requests being handled.\n");
        out.push_str("# TYPE kolokol_api_requests_in_flight gauge\n");
        let _ = writeln!(
            out,
            "kolokol_api_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        out.push_str("# HELP kolokol_api_sse_clients Open GET /v1/events streams.\n");
        out.push_str("# TYPE kolokol_api_sse_clients gauge\n");
        let _ = writeln!(
            out,
            "kolokol_api_sse_clients {}",
            self.sse_clients.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = ApiMetrics::default();
        m.observe("/v1/calls", "POST", 201, Duration::from_micros(300));
        m.observe("/v1/calls", "POST", 201, Duration::from_millis(3));
        m.observe("/v1/calls", "POST", 422, Duration::from_secs(20));
        let mut s = String::new();
        m.write(&mut s);
        assert!(s.contains("kolokol_api_requests_total{route=\"/v1/calls\",method=\"POST\",status=\"201\"} 2\n"), "{s}");
        assert!(s.contains(
            "kolokol_api_request_duration_seconds_bucket{route=\"/v1/calls\",le=\"0.0005\"} 1\n"
        ));
        assert!(s.contains(
            "kolokol_api_request_duration_seconds_bucket{route=\"/v1/calls\",le=\"0.005\"} 2\n"
        ));
        assert!(s.contains(
            "kolokol_api_request_duration_seconds_bucket{route=\"/v1/calls\",le=\"10\"} 2\n"
        ));
        assert!(s.contains(
            "kolokol_api_request_duration_seconds_bucket{route=\"/v1/calls\",le=\"+Inf\"} 3\n"
        ));
        assert!(s.contains("kolokol_api_request_duration_seconds_count{route=\"/v1/calls\"} 3\n"));
    }
}
