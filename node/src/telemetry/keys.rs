//! Key ring events without touching the key ring: a task compares the published key set with the one it saw
//! last, emits the audit events of the change (on the node that runs the ring only, so a cluster reports each
//! change once), counts rotations, and sets the key age gauges (on every node).

use super::metrics as m;
use crate::audit::{Audit, AuditEvent};
use idp_actors::clock::SharedClock;
use idp_actors::keyring::model::{KeyMeta, KeyState};
use idp_actors::keyring::KeyRingHandle;
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
        loop {
            set_key_ages(seen.keys(), clock.now_ms());
            tokio::time::sleep(WATCH_EVERY).await;
            let now = keys.load_full();
            if now.generation() == seen.generation() {
                continue;
            }
            for event in key_events(seen.keys(), now.keys()) {
                if let AuditEvent::KeyActivated { alg, .. } = &event {
                    m::key_rotation(alg);
                }
                if runs_ring() {
                    audit.emit(event);
                }
            }
            seen = now;
        }
    });
}

fn set_key_ages(keys: &[KeyMeta], now_ms: u64) {
    for key in keys {
        let status = match key.state {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Previous => "previous",
        };
        let since = if key.state == KeyState::Current {
            key.activated_at_ms.unwrap_or(key.created_at_ms)
        } else {
            key.created_at_ms
        };
        m::key_age(key.alg.as_str(), status, Duration::from_millis(now_ms.saturating_sub(since)));
    }
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
