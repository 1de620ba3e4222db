//! `--mix login=2,cc=1,...`: which operations a run performs, in which proportions; phases separated by `/` run
//! one after another against the same nodes.

use super::ops::Op;
use anyhow::{bail, Context};

/// The operations of one phase and their weights (all above 0).
pub type Mix = Vec<(Op, u32)>;

/// Parses one phase: `name[=weight]` separated by commas; a missing weight is 1.
pub fn parse_mix(text: &str) -> anyhow::Result<Mix> {
    let mut mix: Mix = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            bail!("empty operation in --mix {text:?}");
        }
        let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
        let op = Op::parse(name.trim()).with_context(|| {
            format!(
                "unknown operation {name:?} in --mix (known: login, sso, cc, refresh, userinfo, introspect, jwks, \
                 discovery, healthz)"
            )
        })?;
        let weight: u32 = weight.trim().parse().with_context(|| format!("bad weight in {part:?}: a whole number"))?;
        if weight == 0 {
            bail!("weight 0 in {part:?}: leave the operation out instead");
        }
        if mix.iter().any(|(seen, _)| *seen == op) {
            bail!("{name:?} appears twice in --mix {text:?}");
        }
        mix.push((op, weight));
    }
    Ok(mix)
}

/// Parses every phase of `--mix`.
pub fn parse_phases(text: &str) -> anyhow::Result<Vec<Mix>> {
    text.split('/').map(parse_mix).collect()
}

/// The index in `mix` of the operation a uniform draw `draw` (any u64) picks, by weight.
pub fn pick(mix: &[(Op, u32)], draw: u64) -> usize {
    let total: u64 = mix.iter().map(|(_, weight)| u64::from(*weight)).sum();
    let mut point = draw % total.max(1);
    for (index, (_, weight)) in mix.iter().enumerate() {
        if point < u64::from(*weight) {
            return index;
        }
        point -= u64::from(*weight);
    }
    0
}

/// A small deterministic generator (SplitMix64) for operation draws and random node choice.
#[derive(Clone, Debug)]
pub struct Draws(u64);

impl Draws {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_names_operations_with_weights() {
        let mix = parse_mix("login=2, cc ,refresh=5").unwrap();
        assert_eq!(mix, vec![(Op::Login, 2), (Op::ClientCredentials, 1), (Op::Refresh, 5)]);
        for name in ["login", "sso", "cc", "refresh", "userinfo", "introspect", "jwks", "discovery"] {
            assert_eq!(parse_mix(name).unwrap()[0].0.name(), name);
        }
        let phases = parse_phases("cc=1/login=1,sso=3").unwrap();
        assert_eq!(phases.len(), 2);
        assert_eq!(phases[1], vec![(Op::Login, 1), (Op::Sso, 3)]);
    }

    #[test]
    fn bad_mixes_are_refused_with_a_reason() {
        for (text, reason) in [
            ("password=1", "unknown operation"),
            ("cc=x", "bad weight"),
            ("cc=-1", "bad weight"),
            ("cc=0", "weight 0"),
            ("cc,,login", "empty operation"),
            ("", "empty operation"),
            ("cc=1,cc=2", "twice"),
        ] {
            let error = parse_mix(text).unwrap_err().to_string();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }

    #[test]
    fn draws_pick_operations_in_proportion_to_their_weights() {
        let mix = parse_mix("login=1,cc=3").unwrap();
        assert_eq!(pick(&mix, 0), 0);
        assert_eq!(pick(&mix, 1), 1);
        assert_eq!(pick(&mix, 3), 1);
        assert_eq!(pick(&mix, 4), 0);
        let mut draws = Draws::new(7);
        let mut counts = [0u32; 2];
        for _ in 0..40_000 {
            counts[pick(&mix, draws.next_u64())] += 1;
        }
        assert!((9_000..11_000).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts[0] + counts[1], 40_000);
    }
}
