//! Who owns what: rendezvous (highest-random-weight) hashing of shards and named singleton leases over member ids.
//!
//! Every node computes ownership from the same inputs (the ready member ids gossiped by chitchat) with no
//! coordination, so the functions here must give the same answer on every node, in every process, on every platform,
//! whatever the order of the member list. Rendezvous hashing gives each (member, item) pair a pseudo-random weight and
//! makes the heaviest member the owner. Removing a member moves only the items it owned, each to the member with the
//! next weight, hence spread evenly over the survivors; adding a member moves only the items it now wins, about
//! `1/n` of them. With a few members and about a thousand shards, computing all weights is cheap (n × 1024 hashes),
//! so no ring or virtual nodes are needed.
//!
//! The hash is written out here (FNV-1a over the bytes, then the SplitMix64 finaliser to mix all bits) rather than
//! taken from `std`, whose `DefaultHasher` is not guaranteed stable across Rust versions: a change of hash would remap
//! every shard of a running cluster during a rolling upgrade. The golden values in the tests pin it.

use idp_proto::ShardId;

/// FNV-1a offset basis and prime (64-bit).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// Domain separators, so that shard 3 and a singleton lease never share an item key by accident.
const SHARD_DOMAIN: &[u8] = b"idp-shard:";
const SINGLETON_DOMAIN: &[u8] = b"idp-singleton:";

/// The member of `members` that owns `shard`, or `None` when there is no member.
pub fn owner<'a>(shard: ShardId, members: &'a [&str]) -> Option<&'a str> {
    heaviest(shard_key(shard), members)
}

/// The shards, in increasing order, that `me` owns among `shard_count` shards when the members are `members`.
/// Empty when `me` is not a member.
pub fn owned_shards(me: &str, members: &[&str], shard_count: u16) -> Vec<ShardId> {
    if !members.contains(&me) {
        return Vec::new();
    }
    let member_hashes: Vec<(u64, &str)> = members.iter().map(|member| (member_hash(member), *member)).collect();
    (0..shard_count)
        .map(ShardId)
        .filter(|shard| heaviest_of_hashed(shard_key(*shard), &member_hashes) == Some(me))
        .collect()
}

/// The member that should hold the singleton lease `name` (e.g. "keyring"), or `None` when there is no member.
pub fn singleton_owner<'a>(name: &str, members: &'a [&str]) -> Option<&'a str> {
    heaviest(item_key(SINGLETON_DOMAIN, name.as_bytes()), members)
}

/// The key of a shard in the weight function.
fn shard_key(shard: ShardId) -> u64 {
    item_key(SHARD_DOMAIN, &shard.0.to_be_bytes())
}

fn item_key(domain: &[u8], item: &[u8]) -> u64 {
    mix64(fnv1a(FNV_OFFSET, domain, item))
}

fn member_hash(member: &str) -> u64 {
    mix64(fnv1a(FNV_OFFSET, b"idp-member:", member.as_bytes()))
}

/// The weight of a member for an item: both already mixed, combined, and mixed again so that the weights of one item
/// over different members behave as independent random draws.
fn weight(member_hash: u64, item_key: u64) -> u64 {
    mix64(member_hash ^ item_key)
}

fn heaviest<'a>(item_key: u64, members: &'a [&str]) -> Option<&'a str> {
    members.iter().map(|member| (member_hash(member), *member)).max_by(|a, b| compare(item_key, a, b)).map(|(_, m)| m)
}

fn heaviest_of_hashed<'a>(item_key: u64, member_hashes: &[(u64, &'a str)]) -> Option<&'a str> {
    member_hashes.iter().max_by(|a, b| compare(item_key, a, b)).map(|(_, member)| *member)
}

/// Orders by weight, then by id so that a (practically impossible) tie has the same winner whatever the list order.
fn compare(item_key: u64, a: &(u64, &str), b: &(u64, &str)) -> std::cmp::Ordering {
    weight(a.0, item_key).cmp(&weight(b.0, item_key)).then_with(|| a.1.cmp(b.1))
}

/// FNV-1a over `prefix` then `bytes`, from `state`.
fn fnv1a(mut state: u64, prefix: &[u8], bytes: &[u8]) -> u64 {
    for byte in prefix.iter().chain(bytes) {
        state ^= u64::from(*byte);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// The SplitMix64 finaliser (Stafford's variant 13): every input bit affects every output bit, which FNV alone does
/// not give for the last bytes of a short input.
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const SHARDS: u16 = 1024;

    /// The owner of every shard, in shard order.
    fn assignment<'a>(members: &'a [&str]) -> Vec<&'a str> {
        (0..SHARDS).map(|shard| owner(ShardId(shard), members).unwrap()).collect()
    }

    fn counts<'a>(assignment: &[&'a str]) -> BTreeMap<&'a str, usize> {
        let mut counts = BTreeMap::new();
        for member in assignment {
            *counts.entry(*member).or_insert(0) += 1;
        }
        counts
    }

    fn node_ids(count: usize) -> Vec<String> {
        (1..=count).map(|index| format!("node-{index}")).collect()
    }

    fn as_strs(ids: &[String]) -> Vec<&str> {
        ids.iter().map(String::as_str).collect()
    }

    #[test]
    fn no_members_no_owner() {
        assert_eq!(owner(ShardId(0), &[]), None);
        assert_eq!(singleton_owner("keyring", &[]), None);
        assert!(owned_shards("a", &[], SHARDS).is_empty());
        assert!(owned_shards("a", &["b", "c"], SHARDS).is_empty(), "a non-member owns nothing");
    }

    #[test]
    fn a_single_member_owns_everything() {
        assert_eq!(owned_shards("solo", &["solo"], SHARDS), (0..SHARDS).map(ShardId).collect::<Vec<_>>());
        assert_eq!(singleton_owner("keyring", &["solo"]), Some("solo"));
    }

    #[test]
    fn every_order_of_the_members_gives_the_same_map() {
        let members = ["a", "node-2", "node-10", "zeta", "b"];
        let reference = assignment(&members);
        let mut permuted = members.to_vec();
        // Every rotation and its reverse.
        for rotation in 0..members.len() {
            permuted.rotate_left(1);
            assert_eq!(assignment(&permuted), reference, "rotation {rotation}");
            let mut reversed = permuted.clone();
            reversed.reverse();
            assert_eq!(assignment(&reversed), reference, "reversed rotation {rotation}");
            assert_eq!(singleton_owner("keyring", &reversed), singleton_owner("keyring", &members));
        }
        // A duplicated member changes nothing either.
        let mut duplicated = members.to_vec();
        duplicated.push("a");
        assert_eq!(assignment(&duplicated), reference);
    }

    #[test]
    fn owned_shards_partition_the_shards() {
        let ids = node_ids(4);
        let members = as_strs(&ids);
        let reference = assignment(&members);
        let mut all: Vec<ShardId> = Vec::new();
        for member in &members {
            let owned = owned_shards(member, &members, SHARDS);
            assert!(owned.windows(2).all(|pair| pair[0] < pair[1]), "sorted and distinct");
            assert!(owned.iter().all(|shard| reference[usize::from(shard.0)] == *member));
            all.extend(owned);
        }
        all.sort();
        assert_eq!(all, (0..SHARDS).map(ShardId).collect::<Vec<_>>());
    }

    /// Asserts that `observed` successes out of `trials` is a plausible draw of a fair binomial with probability `p`:
    /// within four standard deviations (a false alarm about once in 16,000 checks, and the inputs are fixed, so a
    /// passing test stays passing). Tighter relative bounds would be wishful with 7 members: one standard deviation
    /// is already 8% of a fair share of 1024 shards.
    #[track_caller]
    fn assert_fair(observed: usize, trials: usize, p: f64, what: &str) {
        let mean = trials as f64 * p;
        let deviation = (trials as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (observed as f64 - mean).abs() <= 4.0 * deviation,
            "{what}: {observed} of {trials}, expected {mean:.0} ± {:.0}",
            4.0 * deviation
        );
    }

    #[test]
    fn three_members_each_own_a_third_within_15_percent() {
        for ids in [node_ids(3), vec!["idp-0".to_string(), "idp-1".to_string(), "idp-2".to_string()]] {
            let members = as_strs(&ids);
            let counts = counts(&assignment(&members));
            assert_eq!(counts.len(), 3);
            for (member, owned) in &counts {
                let fair = 1024.0 / 3.0;
                assert!((*owned as f64 - fair).abs() < fair * 0.15, "{member} owns {owned} ({counts:?})");
            }
        }
    }

    #[test]
    fn the_spread_is_even() {
        for count in [2, 4, 5, 7, 10] {
            let ids = node_ids(count);
            let members = as_strs(&ids);
            let counts = counts(&assignment(&members));
            assert_eq!(counts.len(), count, "every member owns shards");
            for (member, owned) in &counts {
                assert_fair(*owned, usize::from(SHARDS), 1.0 / count as f64, &format!("{count} members, {member}"));
            }
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_shards_evenly() {
        for count in [3, 4, 6] {
            let ids = node_ids(count);
            let members = as_strs(&ids);
            let before = assignment(&members);
            for leaving in &members {
                let survivors: Vec<&str> = members.iter().copied().filter(|member| member != leaving).collect();
                let after = assignment(&survivors);
                let mut received: BTreeMap<&str, usize> = BTreeMap::new();
                for (shard, (old, new)) in before.iter().zip(&after).enumerate() {
                    if old == leaving {
                        *received.entry(*new).or_insert(0) += 1;
                    } else {
                        assert_eq!(old, new, "shard {shard} moved although its owner stayed");
                    }
                }
                let moved: usize = received.values().sum();
                assert_eq!(received.len(), survivors.len(), "every survivor takes some of {leaving}'s shards");
                for (survivor, taken) in &received {
                    let what = format!("{count} members, {survivor} took from {leaving}");
                    assert_fair(*taken, moved, 1.0 / survivors.len() as f64, &what);
                }
            }
        }
    }

    #[test]
    fn adding_a_member_moves_shards_only_to_it() {
        for count in [1, 2, 3, 5, 9] {
            let ids = node_ids(count + 1);
            let members = as_strs(&ids);
            let (newcomer, old_members) = (members[count], &members[..count]);
            let before = assignment(old_members);
            let after = assignment(&members);
            let mut moved = 0;
            for (shard, (old, new)) in before.iter().zip(&after).enumerate() {
                if old != new {
                    assert_eq!(*new, newcomer, "shard {shard} moved between old members");
                    moved += 1;
                }
            }
            assert_fair(moved, usize::from(SHARDS), 1.0 / (count + 1) as f64, &format!("{count} + 1 members"));
        }
    }

    #[test]
    fn singletons_spread_over_members_and_survive_unrelated_departures() {
        let ids = node_ids(3);
        let members = as_strs(&ids);
        let names: Vec<String> = (0..300).map(|index| format!("lease-{index}")).collect();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for name in &names {
            let holder = singleton_owner(name, &members).unwrap();
            *counts.entry(holder).or_insert(0) += 1;
            let survivors: Vec<&str> = members.iter().copied().filter(|member| *member != holder).collect();
            let other = survivors[0];
            let without_other: Vec<&str> = members.iter().copied().filter(|member| *member != other).collect();
            assert_eq!(singleton_owner(name, &without_other), Some(holder), "{name} moved though its holder stayed");
        }
        assert!(counts.values().all(|count| (70..=130).contains(count)), "{counts:?}");
    }

    /// Pins the hash: a change here would remap the shards of a running cluster during a rolling upgrade, so it must
    /// be deliberate (and come with a migration plan).
    #[test]
    fn golden_values() {
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
        assert_eq!(member_hash("node-1"), 0x6610_824b_6bb9_3b75);
        assert_eq!(shard_key(ShardId(0)), 0x6cf2_2a7d_ff72_f98e);
        let members = ["node-1", "node-2", "node-3"];
        let first: Vec<&str> = (0..8).map(|shard| owner(ShardId(shard), &members).unwrap()).collect();
        assert_eq!(first, ["node-1", "node-3", "node-3", "node-2", "node-3", "node-1", "node-1", "node-2"]);
        assert_eq!(singleton_owner("keyring", &members), Some("node-2"));
        assert_eq!(singleton_owner("keyring", &["idp-0", "idp-1", "idp-2"]), Some("idp-2"));
        assert_eq!(owned_shards("node-2", &members, 16), [3, 7, 9, 10].map(ShardId));
        let counts: Vec<usize> = members.iter().map(|member| owned_shards(member, &members, SHARDS).len()).collect();
        assert_eq!(counts, [325, 344, 355]);
    }
}
