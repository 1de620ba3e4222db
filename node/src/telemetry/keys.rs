//! Key ring events without touching the key ring: a task compares the published key set with the one it saw
//! last, emits the audit events of the change (on the node that runs the ring only, so a cluster reports each
//! change once), counts rotations (there too, so a rotation is counted once per cluster), and sets the key count
//! and age gauges (on every node).

use super::metrics as m;
use crate::audit::{Audit, AuditEvent};
use idp_actors::clock::SharedClock;
use idp_actors::keyring::model::{KeyMeta, KeyState};
use idp_actors::keyring::KeyRingHandle;
use std::collections::BTreeSet;
use std::time::Duration;

/// How often the published key set is compared.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The audit events that turn key set `before` into `after`: a new key is generated (and activated if it signs
/// at once, at bootstrap), a key that starts signing is activated, a key that stops signing is retired.
pub fn key_events(before: &[KeyMeta], after: &[KeyMeta]) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    for key in after {
        let (kid, alg) = (key.kid.clone(), key.alg.as_str().to_string());
        let earlier = before.iter().find(|old| old.kid == key.kid).map(|old| old.state);
        if earlier.is_none() {
            events.push(AuditEvent::KeyGenerated { kid: kid.clone(), alg: alg.clone() });
        }
        if key.state == KeyState::Current && earlier != Some(KeyState::Current) {
            events.push(AuditEvent::KeyActivated { kid: kid.clone(), alg: alg.clone() });
        }
        if key.state == KeyState::Previous && earlier.is_some_and(|state| state != KeyState::Previous) {
            events.push(AuditEvent::KeyRetired { kid, alg });
        }
    }
    events
}

/// Starts the watcher on the current tokio runtime. `runs_ring` says whether this node runs the key ring now.
pub fn watch_key_events(
    keys: KeyRingHandle,
    clock: SharedClock,
    audit: Audit,
    runs_ring: impl Fn() -> bool + Send + 'static,
) {
    tokio::spawn(async move {
        let mut seen = keys.load_full();
        let mut algs = BTreeSet::new();
        loop {
            algs.extend(seen.keys().iter().map(|key| key.alg.as_str()));
            for gauge in key_gauges(seen.keys(), &algs, clock.now_ms()) {
                m::signing_keys(gauge.alg, gauge.status, gauge.count);
                m::key_age(gauge.alg, gauge.status, gauge.age);
            }
            tokio::time::sleep(WATCH_EVERY).await;
            let now = keys.load_full();
            if now.generation() == seen.generation() {
                continue;
            }
            let ring_here = runs_ring();
            for event in key_events(seen.keys(), now.keys()) {
                if !ring_here {
                    continue;
                }
                if let AuditEvent::KeyActivated { alg, .. } = &event {
                    m::key_rotation(alg);
                }
                audit.emit(event);
            }
            seen = now;
        }
    });
}

const STATUSES: [(KeyState, &str); 3] =
    [(KeyState::Next, "next"), (KeyState::Current, "current"), (KeyState::Previous, "previous")];

/// The gauges of one algorithm and status: how many keys, and the age of the oldest (zero without a key).
#[derive(Debug, PartialEq, Eq)]
pub struct KeyGauge {
    pub alg: &'static str,
    pub status: &'static str,
    pub count: usize,
    pub age: Duration,
}

/// Every (algorithm, status) pair of the algorithms ever seen (`algs`), so that a status whose last key vanished
/// reads 0 instead of keeping its last value. The age of `current` counts from its activation.
pub fn key_gauges(keys: &[KeyMeta], algs: &BTreeSet<&'static str>, now_ms: u64) -> Vec<KeyGauge> {
    let mut gauges = Vec::new();
    for alg in algs {
        for (state, status) in STATUSES {
            let matching = keys.iter().filter(|key| key.alg.as_str() == *alg && key.state == state);
            let (mut count, mut oldest) = (0, None::<u64>);
            for key in matching {
                count += 1;
                let since = match key.state {
                    KeyState::Current => key.activated_at_ms.unwrap_or(key.created_at_ms),
                    _ => key.created_at_ms,
                };
                oldest = Some(oldest.map_or(since, |earlier| earlier.min(since)));
            }
            let age = oldest.map_or(Duration::ZERO, |since| Duration::from_millis(now_ms.saturating_sub(since)));
            gauges.push(KeyGauge { alg, status, count, age });
        }
    }
    gauges
}

#[cfg(test)]
mod tests {
    use super::*;
    use idp_actors::jwt::Algorithm;

    fn key(kid: &str, state: KeyState) -> KeyMeta {
        KeyMeta {
            kid: kid.into(),
            alg: Algorithm::RS256,
            state,
            created_at_ms: 0,
            activated_at_ms: None,
            retired_at_ms: None,
        }
    }

    fn kinds(events: &[AuditEvent]) -> Vec<String> {
        events
            .iter()
            .map(|event| match event {
                AuditEvent::KeyGenerated { kid, .. } => format!("generated {kid}"),
                AuditEvent::KeyActivated { kid, .. } => format!("activated {kid}"),
                AuditEvent::KeyRetired { kid, .. } => format!("retired {kid}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn key_gauges_count_every_status_and_zero_the_vanished_ones() {
        let algs: BTreeSet<&'static str> = ["RS256"].into_iter().collect();
        let mut current = key("b", KeyState::Current);
        current.activated_at_ms = Some(4_000);
        let mut old = key("a", KeyState::Previous);
        old.created_at_ms = 1_000;
        let with_next = [current.clone(), key("c", KeyState::Next), old.clone(), key("z", KeyState::Previous)];
        let gauges = key_gauges(&with_next, &algs, 10_000);
        let view: Vec<_> = gauges.iter().map(|gauge| (gauge.status, gauge.count, gauge.age.as_millis())).collect();
        assert_eq!(view, [("next", 1, 10_000), ("current", 1, 6_000), ("previous", 2, 10_000)]);
        // The next key is gone (a failed generation): its count and age read 0, not the last values.
        let gauges = key_gauges(&[current, old], &algs, 10_000);
        let view: Vec<_> = gauges.iter().map(|gauge| (gauge.status, gauge.count, gauge.age.as_millis())).collect();
        assert_eq!(view, [("next", 0, 0), ("current", 1, 6_000), ("previous", 1, 9_000)]);
        assert!(gauges.iter().all(|gauge| gauge.alg == "RS256"));
    }

    #[test]
    fn bootstrap_generates_and_activates_the_first_key() {
        let events = key_events(&[], &[key("a", KeyState::Current), key("b", KeyState::Next)]);
        assert_eq!(kinds(&events), ["generated a", "activated a", "generated b"]);
    }

    #[test]
    fn a_rotation_activates_next_retires_current_and_generates_a_new_next() {
        let before = [key("a", KeyState::Current), key("b", KeyState::Next)];
        let after = [key("b", KeyState::Current), key("c", KeyState::Next), key("a", KeyState::Previous)];
        assert_eq!(kinds(&key_events(&before, &after)), ["activated b", "generated c", "retired a"]);
    }

    #[test]
    fn an_unchanged_ring_or_a_removed_previous_key_emits_nothing() {
        let ring = [key("b", KeyState::Current), key("a", KeyState::Previous)];
        assert!(key_events(&ring, &ring).is_empty());
        assert!(key_events(&ring, &ring[..1]).is_empty());
    }
}
