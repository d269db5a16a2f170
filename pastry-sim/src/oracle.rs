//! The oracle: which nodes are live and active, and who is numerically closest to a key.

use std::collections::BTreeSet;

use pastry_core::Id;

/// The set of live, active node ids, answering "who is the root of this key" with the same
/// closeness order the core uses ([`Id::cmp_closeness`]).
///
/// ```
/// use pastry_core::Id;
/// use pastry_sim::Oracle;
/// let mut o = Oracle::default();
/// o.insert(Id::new(10));
/// o.insert(Id::new(20));
/// assert_eq!(o.closest(Id::new(14)), Some(Id::new(10)));
/// assert_eq!(o.closest(Id::new(15)), Some(Id::new(10))); // tie: lower id
/// assert_eq!(o.closest(Id::new(16)), Some(Id::new(20)));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Oracle {
    ids: BTreeSet<Id>,
}

impl Oracle {
    /// Adds a node.
    pub fn insert(&mut self, id: Id) {
        self.ids.insert(id);
    }

    /// Removes a node.
    pub fn remove(&mut self, id: Id) {
        self.ids.remove(&id);
    }

    /// Whether the node is live and active.
    pub fn contains(&self, id: Id) -> bool {
        self.ids.contains(&id)
    }

    /// Number of live, active nodes.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no node is live and active.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Every live, active id in increasing order.
    pub fn ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.ids.iter().copied()
    }

    /// The live, active node numerically closest to `key`.
    pub fn closest(&self, key: Id) -> Option<Id> {
        let up = self
            .ids
            .range(key..)
            .next()
            .or_else(|| self.ids.iter().next());
        let down = self
            .ids
            .range(..=key)
            .next_back()
            .or_else(|| self.ids.iter().next_back());
        match (up, down) {
            (Some(&a), Some(&b)) => Some(if key.is_closer(a, b) || a == b { a } else { b }),
            _ => None,
        }
    }

    /// The ideal leaf set of `id` among the live, active nodes: its `half` nearest on each
    /// side, nearest first (clockwise side, counter-clockwise side).
    pub fn leaf_set(&self, id: Id, half: usize) -> (Vec<Id>, Vec<Id>) {
        let others = self.ids.len() - usize::from(self.ids.contains(&id));
        let n = half.min(others);
        let cw: Vec<Id> = self
            .ids
            .range((std::ops::Bound::Excluded(id), std::ops::Bound::Unbounded))
            .chain(self.ids.range(..id))
            .copied()
            .filter(|x| *x != id)
            .take(n)
            .collect();
        let ccw: Vec<Id> = self
            .ids
            .range(..id)
            .rev()
            .chain(
                self.ids
                    .range((std::ops::Bound::Excluded(id), std::ops::Bound::Unbounded))
                    .rev(),
            )
            .copied()
            .filter(|x| *x != id)
            .take(n)
            .collect();
        (cw, ccw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_wraps_around_the_ring() {
        let mut o = Oracle::default();
        for x in [100u128, 200, u128::MAX - 50] {
            o.insert(Id::new(x));
        }
        assert_eq!(o.closest(Id::new(10)), Some(Id::new(u128::MAX - 50)));
        assert_eq!(o.closest(Id::new(60)), Some(Id::new(100)));
        assert_eq!(o.closest(Id::new(u128::MAX)), Some(Id::new(u128::MAX - 50)));
        assert_eq!(o.closest(Id::new(150)), Some(Id::new(100)));
        assert_eq!(o.closest(Id::new(151)), Some(Id::new(200)));
        o.remove(Id::new(100));
        assert_eq!(o.closest(Id::new(60)), Some(Id::new(u128::MAX - 50)));
        assert_eq!(Oracle::default().closest(Id::new(1)), None);
    }

    #[test]
    fn closest_agrees_with_brute_force() {
        let mut o = Oracle::default();
        let mut all = Vec::new();
        let mut x: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
        for _ in 0..50 {
            x = x
                .wrapping_mul(0x2545_f491_4f6c_dd1d_1234_5678_9abc_def1)
                .wrapping_add(1);
            o.insert(Id::new(x));
            all.push(Id::new(x));
        }
        for k in 0..500u128 {
            let key = Id::new(k.wrapping_mul(0x0123_4567_89ab_cdef_fedc_ba98_7654_3211));
            let brute = all
                .iter()
                .copied()
                .min_by(|a, b| key.cmp_closeness(*a, *b))
                .unwrap();
            assert_eq!(o.closest(key), Some(brute));
        }
    }

    #[test]
    fn ideal_leaf_sets() {
        let mut o = Oracle::default();
        for x in [10u128, 20, 30, 40, 50] {
            o.insert(Id::new(x));
        }
        let (cw, ccw) = o.leaf_set(Id::new(10), 2);
        assert_eq!(cw, vec![Id::new(20), Id::new(30)]);
        assert_eq!(ccw, vec![Id::new(50), Id::new(40)]);
        let (cw, ccw) = o.leaf_set(Id::new(10), 8);
        assert_eq!(cw.len(), 4);
        assert_eq!(ccw.len(), 4);
    }
}
