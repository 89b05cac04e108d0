//! Deterministic assignment of a user to an experiment's branch, computable by the
//! application itself (see docs/EXPERIMENTS.md for the PHP reference function).
//!
//! Algorithm (after GrowthBook's FNV-1a bucketing):
//! 1. `fnv1a32(s)` is 32-bit FNV-1a over the UTF-8 bytes of `s` (offset basis 2166136261,
//!    prime 16777619); `unit(s) = fnv1a32(decimal(fnv1a32(s))) / 2^32`, in [0, 1): hashed
//!    twice, as GrowthBook's v2 hash does, because one FNV-1a round maps uids that differ in
//!    their last character (`u1`, `u2`) to nearby numbers.
//! 2. In or out: the user takes part iff `unit(name + ":" + uid) < initial_rollout`.
//!    The share is a threshold on a fixed number, so raising `initial_rollout` only adds
//!    users and lowering it only takes users out.
//! 3. Branch: `u = unit(name + ":branch:" + uid)`, a second hash independent of step 2;
//!    branches in order control first (weight 1 - sum of the others), then as written; the
//!    user gets the first branch whose cumulative weight exceeds `u` (the last one when
//!    rounding leaves `u` past the end). Since `u` does not depend on the rollout, a user's
//!    branch never changes when `initial_rollout` does.

use super::Experiment;

/// 32-bit FNV-1a.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `fnv1a32(decimal(fnv1a32(s))) / 2^32`, in [0, 1).
pub fn unit(s: &str) -> f64 {
    let once = fnv1a32(s.as_bytes()).to_string();
    f64::from(fnv1a32(once.as_bytes())) / 4_294_967_296.0
}

/// The branch of `uid` in `exp`, or `None` when the user is outside `initial_rollout`.
pub fn branch_for<'e>(exp: &'e Experiment, uid: &str) -> Option<&'e str> {
    if unit(&format!("{}:{uid}", exp.name)) >= exp.initial_rollout {
        return None;
    }
    Some(branch_ignoring_rollout(exp, uid))
}

/// The branch a user would get if in the experiment; fixed whatever `initial_rollout` is.
pub fn branch_ignoring_rollout<'e>(exp: &'e Experiment, uid: &str) -> &'e str {
    let u = unit(&format!("{}:branch:{uid}", exp.name));
    let weights = exp.weights();
    let mut acc = 0.0;
    for (name, w) in &weights {
        acc += w;
        if u < acc {
            return name;
        }
    }
    weights.last().map_or(exp.control_name(), |(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_values() {
        // Published FNV-1a 32-bit test values.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }
}
