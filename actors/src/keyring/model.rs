//! The key ring as plain data, and its rotation rules as pure functions: no I/O, no clock (`now_ms` is passed in).
//!
//! Every configured algorithm has three kinds of keys (DESIGN.md "Key ring"):
//! - **next**: published in the JWKS, signs nothing yet; at most one per algorithm.
//! - **current**: signs; exactly one per configured algorithm.
//! - **previous**: signs nothing any more, stays published until every token it signed has expired.
//!
//! The rules [`plan`] follows, with the invariants they keep (tests name them):
//! - **K1** After a plan is applied, every configured algorithm has exactly one current key (bootstrap: the first
//!   key of an algorithm becomes current at once, and a next key is generated beside it).
//! - **K2** A key signs only after it has been published as next for `publish_ahead_ms`, so that every relying party
//!   that caches the JWKS for at most that long knows it before its first token (bootstrap excepted: a ring with no
//!   current key for an algorithm takes its next key, or a new key, at once, since it cannot sign at all).
//! - **K3** A key that signed stays published for at least `retain_after_ms` after it stopped signing.
//! - **K4** An algorithm has at most one next key.
//!
//! Scheduled rotation promotes next to current (and current to previous) once current has signed for
//! `rotate_every_ms` **and** next has been published for `publish_ahead_ms`. On-demand rotation (`force`, from
//! `idp admin rotate-keys`) skips the `rotate_every_ms` condition only: it never breaks K2, so when next is younger
//! than `publish_ahead_ms` the rotation is refused with the time left ([`rotation_blockers`]); with
//! `publish_ahead_ms = 0` a forced rotation always happens at once. An algorithm removed from the configuration has
//! its next key dropped (it never signed) and its current key retired (K3 still holds for it).

use crate::jwt::Algorithm;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Next,
    Current,
    Previous,
}

impl KeyState {
    /// JWKS and listing order: current first (clients that take the first key take the signing one), then next.
    fn rank(self) -> u8 {
        match self {
            Self::Current => 0,
            Self::Next => 1,
            Self::Previous => 2,
        }
    }
}

/// What the ring knows of a key, without its key material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    pub kid: String,
    pub alg: Algorithm,
    pub state: KeyState,
    /// When the key was generated, which is when it was first published (as next, or as current at bootstrap).
    pub created_at_ms: u64,
    /// When the key started signing.
    pub activated_at_ms: Option<u64>,
    /// When the key stopped signing.
    pub retired_at_ms: Option<u64>,
}

impl KeyMeta {
    fn activated_or_created_ms(&self) -> u64 {
        self.activated_at_ms.unwrap_or(self.created_at_ms)
    }

    fn retired_or_created_ms(&self) -> u64 {
        self.retired_at_ms.unwrap_or(self.created_at_ms)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicy {
    /// How long a key signs before the scheduled rotation replaces it.
    pub rotate_every_ms: u64,
    /// How long a key is published before it signs: at least the JWKS cache lifetime of relying parties.
    pub publish_ahead_ms: u64,
    /// How long a key stays published after it stopped signing: at least the longest token lifetime plus skew.
    pub retain_after_ms: u64,
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Default for RotationPolicy {
    /// Rotate every 30 days, publish a day ahead, retain a day after.
    fn default() -> Self {
        Self { rotate_every_ms: 30 * DAY_MS, publish_ahead_ms: DAY_MS, retain_after_ms: DAY_MS }
    }
}

impl RotationPolicy {
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.rotate_every_ms == 0 {
            return Err("rotate_every must be longer than zero");
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRingModel {
    /// Kept in canonical order: by algorithm ([`Algorithm::ALL`]), current, next, previous (newest first), kid.
    pub keys: Vec<KeyMeta>,
}

impl KeyRingModel {
    pub fn get(&self, kid: &str) -> Option<&KeyMeta> {
        self.keys.iter().find(|key| key.kid == kid)
    }

    /// The keys of `alg` in `state`, in canonical order.
    pub fn keys_in(&self, alg: Algorithm, state: KeyState) -> impl Iterator<Item = &KeyMeta> {
        self.keys.iter().filter(move |key| key.alg == alg && key.state == state)
    }

    /// The current key of `alg` (the most recently activated one, should K1 ever be broken).
    pub fn current(&self, alg: Algorithm) -> Option<&KeyMeta> {
        self.keys_in(alg, KeyState::Current).max_by_key(|key| (key.activated_or_created_ms(), key.kid.as_str()))
    }

    /// The next key of `alg` (the longest published one, should K4 ever be broken).
    pub fn next(&self, alg: Algorithm) -> Option<&KeyMeta> {
        self.keys_in(alg, KeyState::Next).min_by_key(|key| (key.created_at_ms, key.kid.as_str()))
    }

    fn sort(&mut self) {
        self.keys.sort_by(|left, right| {
            let order = |key: &KeyMeta| (key.alg.index(), key.state.rank(), std::cmp::Reverse(key.created_at_ms));
            order(left).cmp(&order(right)).then_with(|| left.kid.cmp(&right.kid))
        });
    }
}

/// One step of the ring's evolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyAction {
    /// Adds a key of `alg`: `Next` normally, `Current` when bootstrapping an algorithm.
    Generate { alg: Algorithm, state: KeyState },
    /// Next becomes current, current becomes previous.
    Promote { alg: Algorithm },
    /// A current key stops signing and becomes previous (algorithm no longer configured, or a duplicate).
    Retire { kid: String },
    /// The key leaves the ring and the JWKS.
    Drop { kid: String },
}

/// What the ring must do at `now_ms` for the `algorithms` configured; empty when nothing is due. Apply the actions
/// in order (see the module documentation for the rules).
pub fn plan(
    model: &KeyRingModel,
    algorithms: &[Algorithm],
    policy: &RotationPolicy,
    now_ms: u64,
    force: bool,
) -> Vec<KeyAction> {
    let mut actions = Vec::new();
    for alg in Algorithm::ALL {
        if algorithms.contains(&alg) {
            plan_configured(model, alg, policy, now_ms, force, &mut actions);
        } else {
            plan_unconfigured(model, alg, &mut actions);
        }
    }
    plan_drops(model, policy, now_ms, &mut actions);
    actions
}

fn plan_configured(
    model: &KeyRingModel,
    alg: Algorithm,
    policy: &RotationPolicy,
    now_ms: u64,
    force: bool,
    actions: &mut Vec<KeyAction>,
) {
    let (current_opt, next_opt) = (model.current(alg), model.next(alg));
    let is_kept = |kept_opt: Option<&KeyMeta>, key: &KeyMeta| kept_opt.is_some_and(|kept| kept.kid == key.kid);
    // K1, K4: repair a ring that holds duplicates (never produced by `apply`, but a stored ring is input).
    let retire_extra = model.keys_in(alg, KeyState::Current).filter(|key| !is_kept(current_opt, key));
    actions.extend(retire_extra.map(|key| KeyAction::Retire { kid: key.kid.clone() }));
    let drop_extra = model.keys_in(alg, KeyState::Next).filter(|key| !is_kept(next_opt, key));
    actions.extend(drop_extra.map(|key| KeyAction::Drop { kid: key.kid.clone() }));
    let generate_next = KeyAction::Generate { alg, state: KeyState::Next };
    match (current_opt, next_opt) {
        // Bootstrap (K1 over K2): nothing can sign, so the first key signs at once.
        (None, None) => actions.extend([KeyAction::Generate { alg, state: KeyState::Current }, generate_next]),
        (None, Some(_)) => actions.extend([KeyAction::Promote { alg }, generate_next]),
        (Some(_), None) => actions.push(generate_next),
        (Some(current), Some(next)) => {
            if promotion_due(current, next, policy, now_ms, force) {
                actions.extend([KeyAction::Promote { alg }, generate_next]);
            }
        }
    }
}

/// K2: next has been published long enough; and current has signed long enough, unless forced.
fn promotion_due(current: &KeyMeta, next: &KeyMeta, policy: &RotationPolicy, now_ms: u64, force: bool) -> bool {
    let published_for_ms = now_ms.saturating_sub(next.created_at_ms);
    let signing_for_ms = now_ms.saturating_sub(current.activated_or_created_ms());
    published_for_ms >= policy.publish_ahead_ms && (force || signing_for_ms >= policy.rotate_every_ms)
}

fn plan_unconfigured(model: &KeyRingModel, alg: Algorithm, actions: &mut Vec<KeyAction>) {
    let drop_next = model.keys_in(alg, KeyState::Next).map(|key| KeyAction::Drop { kid: key.kid.clone() });
    actions.extend(drop_next);
    let retire_current = model.keys_in(alg, KeyState::Current).map(|key| KeyAction::Retire { kid: key.kid.clone() });
    actions.extend(retire_current);
}

/// K3: a previous key leaves once it has been retired for `retain_after_ms`.
fn plan_drops(model: &KeyRingModel, policy: &RotationPolicy, now_ms: u64, actions: &mut Vec<KeyAction>) {
    let expired = model
        .keys
        .iter()
        .filter(|key| key.state == KeyState::Previous)
        .filter(|key| now_ms.saturating_sub(key.retired_or_created_ms()) >= policy.retain_after_ms);
    actions.extend(expired.map(|key| KeyAction::Drop { kid: key.kid.clone() }));
}

/// Why an on-demand rotation cannot happen now: for each configured algorithm whose next key is younger than
/// `publish_ahead_ms` (K2), the algorithm and the milliseconds left. Empty when the rotation may proceed.
pub fn rotation_blockers(
    model: &KeyRingModel,
    algorithms: &[Algorithm],
    policy: &RotationPolicy,
    now_ms: u64,
) -> Vec<(Algorithm, u64)> {
    let mut blockers = Vec::new();
    for alg in Algorithm::ALL.into_iter().filter(|alg| algorithms.contains(alg)) {
        if model.current(alg).is_none() {
            continue; // bootstrap: nothing to wait for
        }
        let published_since_ms = model.next(alg).map_or(now_ms, |next| next.created_at_ms);
        let ready_at_ms = published_since_ms.saturating_add(policy.publish_ahead_ms);
        if ready_at_ms > now_ms {
            blockers.push((alg, ready_at_ms - now_ms));
        }
    }
    blockers
}

/// Applies one action at `now_ms`; `new_kid` generates the key of a `Generate` action and returns its kid.
/// An action that no longer fits the model (a key already gone) changes nothing.
pub fn apply<E>(
    model: &mut KeyRingModel,
    action: &KeyAction,
    now_ms: u64,
    mut new_kid: impl FnMut(Algorithm) -> Result<String, E>,
) -> Result<(), E> {
    match action {
        KeyAction::Generate { alg, state } => {
            let kid = new_kid(*alg)?;
            model.keys.push(KeyMeta {
                kid,
                alg: *alg,
                state: *state,
                created_at_ms: now_ms,
                activated_at_ms: (*state != KeyState::Next).then_some(now_ms),
                retired_at_ms: (*state == KeyState::Previous).then_some(now_ms),
            });
        }
        KeyAction::Promote { alg } => promote(model, *alg, now_ms),
        KeyAction::Retire { kid } => {
            if let Some(key) = model.keys.iter_mut().find(|key| key.kid == *kid && key.state == KeyState::Current) {
                retire(key, now_ms);
            }
        }
        KeyAction::Drop { kid } => model.keys.retain(|key| key.kid != *kid),
    }
    model.sort();
    Ok(())
}

fn promote(model: &mut KeyRingModel, alg: Algorithm, now_ms: u64) {
    let Some(next_kid) = model.next(alg).map(|key| key.kid.clone()) else {
        return; // never leave an algorithm without a current key
    };
    for key in model.keys.iter_mut().filter(|key| key.alg == alg) {
        if key.state == KeyState::Current {
            retire(key, now_ms);
        } else if key.kid == next_kid {
            key.state = KeyState::Current;
            key.activated_at_ms = Some(now_ms);
        }
    }
}

fn retire(key: &mut KeyMeta, now_ms: u64) {
    key.state = KeyState::Previous;
    key.retired_at_ms = Some(now_ms);
}

/// K1 and K4 as text, for assertions before a ring is stored: empty when they hold.
pub fn invariant_violations(model: &KeyRingModel, algorithms: &[Algorithm]) -> Vec<String> {
    let mut violations = Vec::new();
    for alg in Algorithm::ALL {
        let currents = model.keys_in(alg, KeyState::Current).count();
        if algorithms.contains(&alg) && currents != 1 {
            violations.push(format!("K1: {alg} has {currents} current keys"));
        }
        let nexts = model.keys_in(alg, KeyState::Next).count();
        if nexts > 1 {
            violations.push(format!("K4: {alg} has {nexts} next keys"));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::convert::Infallible;
    use Algorithm::{EdDSA, ES256, RS256};
    use KeyState::{Current, Next, Previous};

    const HOUR: u64 = 60 * 60 * 1000;
    const POLICY: RotationPolicy =
        RotationPolicy { rotate_every_ms: 10 * HOUR, publish_ahead_ms: 2 * HOUR, retain_after_ms: 3 * HOUR };

    fn meta(kid: &str, alg: Algorithm, state: KeyState, created: u64, activated: Option<u64>) -> KeyMeta {
        let retired_at_ms = (state == Previous).then_some(activated.unwrap_or(created) + HOUR);
        KeyMeta { kid: kid.into(), alg, state, created_at_ms: created, activated_at_ms: activated, retired_at_ms }
    }

    fn ring(keys: Vec<KeyMeta>) -> KeyRingModel {
        KeyRingModel { keys }
    }

    /// Applies actions, naming generated keys `g1`, `g2`, ... in order.
    fn apply_all(model: &mut KeyRingModel, actions: &[KeyAction], now_ms: u64, counter: &mut u64) {
        for action in actions {
            apply(model, action, now_ms, |_| {
                *counter += 1;
                Ok::<_, Infallible>(format!("g{counter}"))
            })
            .unwrap();
        }
    }

    fn generate(alg: Algorithm, state: KeyState) -> KeyAction {
        KeyAction::Generate { alg, state }
    }

    fn drop_key(kid: &str) -> KeyAction {
        KeyAction::Drop { kid: kid.into() }
    }

    /// A steady RS256 ring: `c` current since `activated`, `n` next since `next_created`.
    fn steady(activated: u64, next_created: u64) -> KeyRingModel {
        ring(vec![meta("c", RS256, Current, 0, Some(activated)), meta("n", RS256, Next, next_created, None)])
    }

    /// Name, ring, configured algorithms, policy, now, forced, expected plan.
    type Scenario = (&'static str, KeyRingModel, &'static [Algorithm], RotationPolicy, u64, bool, Vec<KeyAction>);

    #[test]
    fn plan_scenarios() {
        let promote = |alg| KeyAction::Promote { alg };
        let zero_ahead = RotationPolicy { publish_ahead_ms: 0, ..POLICY };
        #[rustfmt::skip]
        let scenarios: Vec<Scenario> = vec![
            ("K1 bootstrap: first key current at once, next beside it", ring(vec![]), &[RS256, EdDSA], POLICY, 5, false,
                vec![generate(RS256, Current), generate(RS256, Next), generate(EdDSA, Current), generate(EdDSA, Next)]),
            ("nothing due", steady(0, 0), &[RS256], POLICY, 9 * HOUR, false, vec![]),
            ("rotate_every elapsed, next published long enough", steady(0, 0), &[RS256], POLICY, 10 * HOUR, false,
                vec![promote(RS256), generate(RS256, Next)]),
            ("K2: rotate_every elapsed but next too young", steady(0, 9 * HOUR), &[RS256], POLICY, 10 * HOUR, false,
                vec![]),
            ("forced: rotate_every need not elapse", steady(0, 0), &[RS256], POLICY, 2 * HOUR, true,
                vec![promote(RS256), generate(RS256, Next)]),
            ("K2 forced: next too young", steady(0, 0), &[RS256], POLICY, 2 * HOUR - 1, true, vec![]),
            ("forced with publish_ahead 0 rotates at once", steady(0, 5), &[RS256], zero_ahead, 5, true,
                vec![promote(RS256), generate(RS256, Next)]),
            ("missing next is generated", ring(vec![meta("c", RS256, Current, 0, Some(0))]), &[RS256], POLICY, 1, false,
                vec![generate(RS256, Next)]),
            ("no current: next takes over at once", ring(vec![meta("n", ES256, Next, 7, None)]), &[ES256], POLICY, 8,
                false, vec![promote(ES256), generate(ES256, Next)]),
            ("unconfigured algorithm: next dropped, current retired", steady(0, 0), &[EdDSA], POLICY, 1, false,
                vec![drop_key("n"), KeyAction::Retire { kid: "c".into() }, generate(EdDSA, Current),
                     generate(EdDSA, Next)]),
            ("K4 and K1 repaired: younger next dropped, older current retired",
                ring(vec![meta("c1", RS256, Current, 0, Some(1)), meta("c2", RS256, Current, 0, Some(2)),
                          meta("n1", RS256, Next, 3, None), meta("n2", RS256, Next, 4, None)]),
                &[RS256], POLICY, 5, false, vec![KeyAction::Retire { kid: "c1".into() }, drop_key("n2")]),
        ];
        for (name, model, algorithms, policy, now_ms, force, expected) in scenarios {
            assert_eq!(plan(&model, algorithms, &policy, now_ms, force), expected, "{name}");
        }
    }

    #[test]
    fn k3_previous_keys_are_dropped_only_after_retain_after() {
        let retired_at = 5 * HOUR;
        let previous = KeyMeta { retired_at_ms: Some(retired_at), ..meta("p", RS256, Previous, 0, Some(0)) };
        let mut model = steady(4 * HOUR, 4 * HOUR);
        model.keys.push(previous);
        let at = |now_ms| plan(&model, &[RS256], &POLICY, now_ms, false);
        assert_eq!(at(retired_at + POLICY.retain_after_ms - 1), vec![]);
        assert_eq!(at(retired_at + POLICY.retain_after_ms), vec![drop_key("p")]);
    }

    #[test]
    fn rotation_blockers_tell_how_long_to_wait() {
        let model = steady(0, HOUR);
        assert_eq!(rotation_blockers(&model, &[RS256], &POLICY, HOUR + 30), vec![(RS256, 2 * HOUR - 30)]);
        assert_eq!(rotation_blockers(&model, &[RS256], &POLICY, 3 * HOUR), vec![]);
        assert_eq!(rotation_blockers(&model, &[RS256, ES256], &POLICY, 3 * HOUR), vec![], "bootstrap never waits");
        let zero_ahead = RotationPolicy { publish_ahead_ms: 0, ..POLICY };
        assert_eq!(rotation_blockers(&model, &[RS256], &zero_ahead, HOUR), vec![]);
    }

    #[test]
    fn apply_promotes_retires_and_keeps_canonical_order() {
        let mut model = steady(0, 0);
        model.keys.push(meta("e", ES256, Current, 0, Some(0)));
        let mut counter = 0;
        apply_all(&mut model, &[KeyAction::Promote { alg: RS256 }, generate(RS256, Next)], 10, &mut counter);
        let summary: Vec<_> = model.keys.iter().map(|key| (key.kid.as_str(), key.alg, key.state)).collect();
        assert_eq!(
            summary,
            [("n", RS256, Current), ("g1", RS256, Next), ("c", RS256, Previous), ("e", ES256, Current)]
        );
        assert_eq!(model.get("n").unwrap().activated_at_ms, Some(10));
        assert_eq!(model.get("c").unwrap().retired_at_ms, Some(10));
        assert_eq!(model.get("g1").unwrap().created_at_ms, 10);
        // A promotion without a next key leaves the current key signing (K1).
        apply_all(&mut model, &[KeyAction::Promote { alg: ES256 }], 11, &mut counter);
        assert_eq!(model.current(ES256).unwrap().kid, "e");
        // Actions on keys that are gone change nothing.
        let before = model.clone();
        apply_all(&mut model, &[drop_key("zz"), KeyAction::Retire { kid: "g1".into() }], 12, &mut counter);
        assert_eq!(model, before);
    }

    #[test]
    fn apply_stops_at_the_first_failed_generation() {
        let mut model = KeyRingModel::default();
        let failed = apply(&mut model, &generate(RS256, Current), 0, |_| Err("no entropy"));
        assert_eq!(failed, Err("no entropy"));
        assert!(model.keys.is_empty());
    }

    /// A deterministic generator for the walks (SplitMix64).
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut mixed = self.0;
            mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            mixed ^ (mixed >> 31)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }

        fn algorithms(&mut self) -> Vec<Algorithm> {
            let mask = 1 + self.below(7);
            Algorithm::ALL.into_iter().filter(|alg| mask & (1 << alg.index()) != 0).collect()
        }
    }

    /// What happened to one key over a walk.
    #[derive(Default)]
    struct KeyHistory {
        signing_until_opt: Option<u64>,
        signed: bool,
    }

    /// Checks K2 and K3 on the transition from `before` to `after` at `now_ms`.
    fn check_transition(
        before: &KeyRingModel,
        after: &KeyRingModel,
        histories: &mut BTreeMap<String, KeyHistory>,
        policy: &RotationPolicy,
        now_ms: u64,
    ) {
        for key in &after.keys {
            let previous_state_opt = before.get(&key.kid).map(|old| old.state);
            let history = histories.entry(key.kid.clone()).or_default();
            if key.state == Current && previous_state_opt != Some(Current) {
                let bootstrap = before.current(key.alg).is_none();
                let published_for_ms = now_ms - key.created_at_ms;
                assert!(bootstrap || published_for_ms >= policy.publish_ahead_ms, "K2: {} signs too early", key.kid);
                history.signed = true;
            }
            if key.state == Previous && previous_state_opt == Some(Current) {
                history.signing_until_opt = Some(now_ms);
            }
            assert!(!(previous_state_opt == Some(Previous) && key.state != Previous), "a previous key never returns");
        }
        for key in before.keys.iter().filter(|key| after.get(&key.kid).is_none()) {
            let history = &histories[&key.kid];
            if history.signed {
                let until = history.signing_until_opt.expect("K3: a key is retired before it is dropped");
                assert!(now_ms - until >= policy.retain_after_ms, "K3: {} dropped too early", key.kid);
            }
        }
    }

    fn walk(seed: u64) {
        let mut random = SplitMix(seed);
        let policy = RotationPolicy {
            rotate_every_ms: 1 + random.below(20) * HOUR,
            publish_ahead_ms: random.below(4) * HOUR,
            retain_after_ms: 1 + random.below(6) * HOUR,
        };
        let mut algorithms = random.algorithms();
        let (mut model, mut histories, mut counter) = (KeyRingModel::default(), BTreeMap::new(), 0);
        let mut now_ms = 1_000 + random.below(HOUR);
        for _ in 0..400 {
            now_ms += random.below(3 * HOUR);
            if random.below(25) == 0 {
                algorithms = random.algorithms();
            }
            // The actor refuses a forced rotation that K2 blocks.
            let force = random.below(8) == 0 && rotation_blockers(&model, &algorithms, &policy, now_ms).is_empty();
            let before = model.clone();
            let actions = plan(&model, &algorithms, &policy, now_ms, force);
            apply_all(&mut model, &actions, now_ms, &mut counter);
            check_transition(&before, &model, &mut histories, &policy, now_ms);
            // K1 and K4 after every step.
            assert_eq!(invariant_violations(&model, &algorithms), Vec::<String>::new(), "seed {seed}");
            // A plan applied leaves nothing due at the same instant.
            assert_eq!(plan(&model, &algorithms, &policy, now_ms, false), vec![], "seed {seed}");
            let kids: BTreeSet<_> = model.keys.iter().map(|key| &key.kid).collect();
            assert_eq!(kids.len(), model.keys.len(), "kids are unique");
        }
    }

    #[test]
    fn randomized_walks_keep_k1_to_k4() {
        for seed in 0..200 {
            walk(seed);
        }
    }

    /// Every combination of forcing and step lengths over a short horizon, for one algorithm.
    #[test]
    fn exhaustive_short_walks_keep_k1_to_k4() {
        let policy = RotationPolicy { rotate_every_ms: 3, publish_ahead_ms: 2, retain_after_ms: 2 };
        let steps = [(1, false), (1, true), (2, false), (3, true)];
        for choices in 0..steps.len().pow(6) {
            let (mut model, mut histories, mut counter, mut now_ms) = (KeyRingModel::default(), BTreeMap::new(), 0, 0);
            let mut remaining = choices;
            for _ in 0..6 {
                let (delta_ms, force) = steps[remaining % steps.len()];
                remaining /= steps.len();
                now_ms += delta_ms;
                let force = force && rotation_blockers(&model, &[RS256], &policy, now_ms).is_empty();
                let before = model.clone();
                let actions = plan(&model, &[RS256], &policy, now_ms, force);
                apply_all(&mut model, &actions, now_ms, &mut counter);
                check_transition(&before, &model, &mut histories, &policy, now_ms);
                assert!(invariant_violations(&model, &[RS256]).is_empty());
            }
        }
    }

    #[test]
    fn invariant_violations_name_the_broken_invariant() {
        let model = ring(vec![meta("n1", RS256, Next, 0, None), meta("n2", RS256, Next, 0, None)]);
        assert_eq!(
            invariant_violations(&model, &[RS256]),
            ["K1: RS256 has 0 current keys", "K4: RS256 has 2 next keys"]
        );
    }

    #[test]
    fn stored_form_is_snake_case() {
        let key = meta("k", EdDSA, Previous, 1, Some(2));
        let json = serde_json::to_value(&key).unwrap();
        assert_eq!(json["state"], "previous");
        assert_eq!(json["alg"], "EdDSA");
        assert_eq!(serde_json::from_value::<KeyMeta>(json).unwrap(), key);
    }
}
