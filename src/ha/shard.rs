//! On paper, for when one leader is not enough (10,000 targets): the targets spread over N live instances. Not
//! wired into the daemon; `docs/ha.md` describes the design and the tests below simulate it.
//!
//! - A target belongs to one of [`SLOTS`] slots (a stable hash of its name); each slot has its own lease row
//!   (`warden_shards`: slot, owner, epoch), fenced like the pair's single lease: its epoch grows at every change of
//!   owner and every write about a target carries its slot's epoch.
//! - The owner a slot *should* have is the live member with the highest rendezvous score (highest random weight)
//!   for that slot: when a member joins, it wins about 1/N of the slots and nothing else moves; when one leaves,
//!   only its slots move, spread evenly over the others.
//! - A handover is one compare-and-swap on the slot's row from the old owner to the new one (`UPDATE … SET owner =
//!   $new, epoch = epoch + 1 WHERE slot = $s AND owner = $old`), done by the old owner after it stopped acting on
//!   the slot: the row never has no owner or two, and the new owner starts acting only when it reads itself there.
//!   A member that dies leaves its slots to expire like the pair's lease; the survivors then take them.

/// How many slots the targets are hashed into.
pub const SLOTS: usize = 1024;

/// A stable 64-bit hash (FNV-1a, then a finaliser): the same on every instance and every version.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.as_bytes().iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    // splitmix64's finaliser: spreads nearby inputs over the whole range.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The slot of a target.
pub fn slot_of(target: &str) -> usize {
    (stable_hash(&[target]) % SLOTS as u64) as usize
}

/// The member that should own `slot`: the highest rendezvous score among `members` (ties by name). `None` without
/// members.
pub fn owner_of(slot: usize, members: &[String]) -> Option<&str> {
    let key = slot.to_string();
    members.iter().max_by_key(|m| (stable_hash(&[m.as_str(), &key]), m.as_str())).map(|m| m.as_str())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The slots' lease rows and what each member is acting on, changed one atomic step at a time.
    struct Cluster {
        /// `warden_shards`: slot → (owner, epoch).
        rows: Vec<(String, u64)>,
        /// Slots each member acts on now.
        acting: BTreeMap<String, BTreeSet<usize>>,
        /// Target counts per slot.
        targets_in: Vec<usize>,
        steps: u64,
    }

    impl Cluster {
        fn new(members: &[String], targets: &[String]) -> Self {
            let mut targets_in = vec![0; SLOTS];
            for t in targets {
                targets_in[slot_of(t)] += 1;
            }
            let rows: Vec<(String, u64)> = (0..SLOTS).map(|s| (owner_of(s, members).unwrap().to_string(), 1)).collect();
            let mut acting: BTreeMap<String, BTreeSet<usize>> =
                members.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
            for (s, (o, _)) in rows.iter().enumerate() {
                acting.get_mut(o).unwrap().insert(s);
            }
            let c = Cluster { rows, acting, targets_in, steps: 0 };
            c.check();
            c
        }

        /// Every slot has exactly one owner row (by construction) naming a member, and at most one member acts on it.
        fn check(&self) {
            for s in 0..SLOTS {
                let actors = self.acting.values().filter(|a| a.contains(&s)).count();
                assert!(actors <= 1, "slot {s} is acted on by {actors} members at step {}", self.steps);
                assert!(self.acting.contains_key(&self.rows[s].0), "slot {s} is owned by a member that left");
            }
        }

        /// One member's rebalancing moves, each an atomic step checked on its own: stop acting on a slot that should
        /// move, hand its row over (compare-and-swap on the owner), and start acting on slots it reads as its own.
        fn rebalance(&mut self, member: &str, view: &[String], rng: &mut impl Rng) -> usize {
            let mut moved = 0;
            let mut slots: Vec<usize> = (0..SLOTS).collect();
            slots.shuffle(rng);
            for s in slots {
                let want = owner_of(s, view).unwrap().to_string();
                if self.rows[s].0 == member && want != member && self.acting.contains_key(&want) {
                    self.acting.get_mut(member).unwrap().remove(&s);
                    self.steps += 1;
                    self.check();
                    // The compare-and-swap: only the row's current owner can hand it over.
                    if self.rows[s].0 == member {
                        self.rows[s] = (want, self.rows[s].1 + 1);
                        moved += self.targets_in[s];
                    }
                    self.steps += 1;
                    self.check();
                }
            }
            // Slots it now reads as its own and is not yet acting on.
            for s in 0..SLOTS {
                if self.rows[s].0 == member && self.acting.get_mut(member).unwrap().insert(s) {
                    self.steps += 1;
                    self.check();
                }
            }
            moved
        }

        fn owners(&self) -> Vec<String> {
            self.rows.iter().map(|(o, _)| o.clone()).collect()
        }
    }

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("warden-{i}")).collect()
    }

    #[test]
    fn ten_thousand_targets_over_three_then_four_then_three_members_move_little_and_never_twice_owned() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let targets: Vec<String> = (0..10_000).map(|i| format!("jm-{i:05}.prod.example")).collect();
        let three = names(3);
        let four = names(4);
        let mut c = Cluster::new(&three, &targets);
        let before = c.owners();
        let per_member = |c: &Cluster| {
            let mut n: BTreeMap<String, usize> = BTreeMap::new();
            for (s, (o, _)) in c.rows.iter().enumerate() {
                *n.entry(o.clone()).or_default() += c.targets_in[s];
            }
            n
        };

        // warden-4 joins. The others see it in turns (their views differ meanwhile: the fourth one's own view first).
        c.acting.insert("warden-4".into(), BTreeSet::new());
        let mut moved_in = 0;
        let mut order = three.clone();
        order.shuffle(&mut rng);
        for m in &order {
            moved_in += c.rebalance(m, &four, &mut rng);
            c.rebalance("warden-4", &four, &mut rng);
        }
        for s in 0..SLOTS {
            assert_eq!(c.rows[s].0, owner_of(s, &four).unwrap(), "slot {s} did not end at its rendezvous owner");
        }
        // Only what warden-4 wins moves (about a quarter), and everyone ends with a fair share.
        let on_four = per_member(&c)["warden-4"];
        assert_eq!(moved_in, on_four, "targets moved between the old members");
        assert!((2_000..=3_000).contains(&moved_in), "{moved_in} of 10000 targets moved when a fourth member joined");
        for (m, n) in per_member(&c) {
            assert!((2_100..=2_900).contains(&n), "{m} owns {n} targets of 10000 over 4 members");
        }

        // warden-2 leaves gracefully: it hands every slot over first, then goes.
        let left: Vec<String> = four.iter().filter(|m| *m != "warden-2").cloned().collect();
        let moved_out = c.rebalance("warden-2", &left, &mut rng);
        for m in &left {
            c.rebalance(m, &left, &mut rng);
        }
        assert!(c.acting["warden-2"].is_empty());
        c.acting.remove("warden-2");
        c.check();
        let had = per_member(&c);
        assert!(!had.contains_key("warden-2"));
        assert!((2_000..=3_000).contains(&moved_out), "{moved_out} targets moved when a member left");
        for (s, (o, _)) in c.rows.iter().enumerate() {
            assert_eq!(o, owner_of(s, &left).unwrap());
            // Slots that were not warden-2's did not move.
            if before[s] != "warden-2" && owner_of(s, &four).unwrap() != "warden-2" {
                assert_eq!(*o, owner_of(s, &four).unwrap());
            }
        }
        // Every epoch grew by one per handover: a slot that moved twice is at 3.
        assert!(c.rows.iter().all(|(_, e)| (1..=3).contains(e)));
        eprintln!(
            "sharding simulation: 10000 targets, {SLOTS} slots; 3→4 members moved {moved_in}, 4→3 moved {moved_out}; \
             {} atomic steps checked, never a slot acted on twice",
            c.steps
        );
    }

    #[test]
    fn the_rendezvous_owner_is_stable_and_ignores_the_order_of_members() {
        let a = names(3);
        let mut b = a.clone();
        b.reverse();
        for s in 0..SLOTS {
            assert_eq!(owner_of(s, &a), owner_of(s, &b));
        }
        assert_eq!(owner_of(0, &[]), None);
        assert_eq!(slot_of("jm-a"), slot_of("jm-a"));
        assert_ne!(stable_hash(&["ab", "c"]), stable_hash(&["a", "bc"]));
    }
}
