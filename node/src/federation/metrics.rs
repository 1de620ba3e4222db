//! The federation's metrics, recorded with the `metrics` facade (the node installs the exporter). Labels are the
//! upstream's configured id, a step or a reason from a fixed list: never a user, a code or a token.
//!
//! - `idp_federation_attempts_total{upstream}`: browsers sent to the upstream.
//! - `idp_federation_successes_total{upstream}`: callbacks that signed a user in.
//! - `idp_federation_failures_total{upstream, reason}`: callbacks that did not; `reason` is one of `unavailable`,
//!   `timeout`, `error_response`, `invalid_token`, `misconfigured`, `not_fresh` (a fresh login was asked for and
//!   the upstream cannot vouch for one; also counted at the start for an `oauth2` upstream), `bad_state`
//!   (unknown, used or expired `state`), `other_browser`, `refused` (the broker refused: no linked account and
//!   provisioning off, or a disabled user; counted once), `directory` (the account could not be stored).
//! - `idp_federation_upstream_duration_seconds{upstream, step}` (histogram): each request to the upstream;
//!   `step` is `discovery`, `jwks`, `token`, `userinfo` or `emails`.
//! - `idp_federation_callback_duration_seconds{upstream}` (histogram): a successful callback, from its arrival to
//!   the session written: the broker hop's own latency.

use std::time::Duration;

pub fn attempt(upstream: &str) {
    metrics::counter!("idp_federation_attempts_total", "upstream" => upstream.to_string()).increment(1);
}

pub fn success(upstream: &str, callback: Duration) {
    metrics::counter!("idp_federation_successes_total", "upstream" => upstream.to_string()).increment(1);
    metrics::histogram!("idp_federation_callback_duration_seconds", "upstream" => upstream.to_string())
        .record(callback.as_secs_f64());
}

pub fn failure(upstream: &str, reason: &'static str) {
    metrics::counter!("idp_federation_failures_total", "upstream" => upstream.to_string(), "reason" => reason)
        .increment(1);
}

pub fn upstream_call(upstream: &str, step: &'static str, took: Duration) {
    metrics::histogram!("idp_federation_upstream_duration_seconds", "upstream" => upstream.to_string(), "step" => step)
        .record(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
    use parking_lot::Mutex;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// Records every counter and histogram by `name{label=value,…}`.
    #[derive(Default)]
    struct Capture {
        counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
        histograms: Mutex<BTreeMap<String, Arc<Samples>>>,
    }

    #[derive(Default)]
    struct Samples(Mutex<Vec<f64>>);

    impl HistogramFn for Samples {
        fn record(&self, value: f64) {
            self.0.lock().push(value);
        }
    }

    fn name_of(key: &Key) -> String {
        let labels: Vec<String> = key.labels().map(|label| format!("{}={}", label.key(), label.value())).collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.counters.lock().entry(name_of(key)).or_default().clone())
        }

        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }

        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.histograms.lock().entry(name_of(key)).or_default().clone())
        }
    }

    #[test]
    fn every_outcome_is_counted_per_upstream_with_its_reason_and_latency() {
        let capture = Capture::default();
        metrics::with_local_recorder(&capture, || {
            attempt("acme");
            attempt("acme");
            success("acme", Duration::from_millis(40));
            failure("acme", "timeout");
            failure("github", "bad_state");
            upstream_call("acme", "token", Duration::from_millis(12));
        });
        let counters: BTreeMap<String, u64> =
            capture.counters.lock().iter().map(|(name, value)| (name.clone(), value.load(Ordering::Relaxed))).collect();
        let expected: BTreeMap<String, u64> = [
            ("idp_federation_attempts_total{upstream=acme}", 2),
            ("idp_federation_successes_total{upstream=acme}", 1),
            ("idp_federation_failures_total{upstream=acme,reason=timeout}", 1),
            ("idp_federation_failures_total{upstream=github,reason=bad_state}", 1),
        ]
        .into_iter()
        .map(|(name, count)| (name.to_string(), count))
        .collect();
        assert_eq!(counters, expected);
        let histograms = capture.histograms.lock();
        let callback = histograms["idp_federation_callback_duration_seconds{upstream=acme}"].0.lock().clone();
        assert_eq!(callback, vec![0.04]);
        let token = histograms["idp_federation_upstream_duration_seconds{upstream=acme,step=token}"].0.lock().clone();
        assert_eq!(token, vec![0.012]);
    }
}
