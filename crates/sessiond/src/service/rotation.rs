//! The refresh rotation rules (docs/DESIGN.md §3.3) as a pure decision over the
//! row's [`RefreshState`], so that every rule is a unit test and the service only carries out
//! the verdict.
//!
//! A presented refresh token names its generation (`gen`); the row knows the current
//! generation, whether the current pair has been used, and the recent steps of the path that
//! leads to the current secret. From those:
//!
//! - the **current** token rotates;
//! - a token **rotated out less than `refresh_grace` ago** (or rotated out by a rival request
//!   while this one was deciding) converges on the current pair, however many steps ago;
//! - the **parent of an unused current pair**, within `lost_response_window` of the step that
//!   rotated it out, is a lost response and gets a fresh successor (the unused pair is
//!   abandoned);
//! - anything else is **reuse**: a token whose successor has been used outside the grace
//!   window, or a token that is not on the current path at all (an abandoned successor, or a
//!   generation older than the kept steps).

use std::time::Duration;

use crate::clock::{is_expired, Timestamp};
use crate::id::KeyId;
use crate::session::{RefreshState, RefreshStep};

/// The most steps a row keeps. Steps older than the grace window are dropped anyway (except the
/// last, which the lost-response rule needs); this only bounds a client that rotates more than
/// this many times within one grace window.
pub(crate) const MAX_STEPS: usize = 16;

/// The two settings the rules depend on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    pub(crate) grace: Duration,
    pub(crate) lost_response_window: Duration,
}

/// Why a presented token counts as reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// Its successor has been used and the grace window has passed.
    SuccessorUsed,
    /// A lost response, but past `lost_response_window` (or the window is zero: strict).
    LostResponseExpired,
    /// Not on the path to the current secret: an abandoned successor, or older than the kept
    /// steps (whose successors were all used).
    NotOnChain,
}

impl Reuse {
    /// The audit reason.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reuse::SuccessorUsed => "successor_used",
            Reuse::LostResponseExpired => "lost_response_window_passed",
            Reuse::NotOnChain => "not_on_chain",
        }
    }
}

/// What to do with a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The current token: derive the next generation from it.
    Rotate,
    /// A recent predecessor: derive the current secret along `chain[from..]` and hand out the
    /// current pair (no write).
    Converge {
        /// Index of the step that rotated the presented token out.
        from: usize,
    },
    /// A lost response: derive a fresh successor from the presented token in place of the
    /// unused current pair.
    Reissue,
    /// Theft presumed: revoke the session.
    Reused(Reuse),
}

/// The index of the step on the current path that rotated generation `generation` out.
pub(crate) fn rotated_out_by(chain: &[RefreshStep], generation: u64) -> Option<usize> {
    chain.iter().position(|s| s.parent == generation)
}

/// The verdict for a token of generation `presented` whose secret hashes to the current hash
/// (`is_current_secret`) or not, at `now`.
///
/// `first_look` is `None` on a first decision. After a compare-and-swap lost to a rival write,
/// the caller decides again with `Some(seen)`, where `seen` is the generation of the step that
/// rotated the presented token out as the first decision saw it (`None`: there was none). A
/// step that differs now was written by the rival during this request: the presented token was
/// current, or a lost response, a moment ago, so converging on the rival's result is never
/// theft, whatever the grace window.
pub(crate) fn decide(
    rules: Rules,
    state: &RefreshState,
    presented: u64,
    is_current_secret: bool,
    now: Timestamp,
    first_look: Option<Option<u64>>,
) -> Verdict {
    if presented == state.generation {
        // Generations are unique per session, so a token of the current generation whose
        // secret is not the current one cannot have been issued by us for this row.
        return if is_current_secret {
            Verdict::Rotate
        } else {
            Verdict::Reused(Reuse::NotOnChain)
        };
    }
    let Some(from) = rotated_out_by(&state.chain, presented) else {
        return Verdict::Reused(Reuse::NotOnChain);
    };
    let Some((out, later)) = state
        .chain
        .get(from..)
        .and_then(<[RefreshStep]>::split_first)
    else {
        return Verdict::Reused(Reuse::NotOnChain);
    };
    let rival_wrote_it = first_look.is_some_and(|seen| seen != Some(out.generation));
    if rival_wrote_it || !is_expired(out.at.saturating_add(rules.grace), now) {
        return Verdict::Converge { from };
    }
    let is_parent_of_current = later.is_empty();
    if !is_parent_of_current || state.used {
        return Verdict::Reused(Reuse::SuccessorUsed);
    }
    if rules.lost_response_window.is_zero()
        || is_expired(out.at.saturating_add(rules.lost_response_window), now)
    {
        return Verdict::Reused(Reuse::LostResponseExpired);
    }
    Verdict::Reissue
}

/// The chain after a rotation (`replace_last == false`: the new step extends the path) or a
/// re-issue (`true`: the new step replaces the abandoned last step), pruned: steps that rotated
/// their parent out before the grace window are dropped, except the last, and at most
/// [`MAX_STEPS`] are kept.
pub(crate) fn next_chain(
    chain: &[RefreshStep],
    step: RefreshStep,
    replace_last: bool,
    grace: Duration,
    now: Timestamp,
) -> Vec<RefreshStep> {
    let kept = if replace_last {
        chain.split_last().map_or(&[][..], |(_, rest)| rest)
    } else {
        chain
    };
    let recent = kept
        .iter()
        .filter(|s| !is_expired(s.at.saturating_add(grace), now))
        .cloned();
    let mut next: Vec<RefreshStep> = recent.collect();
    next.push(step);
    let excess = next.len().saturating_sub(MAX_STEPS);
    next.drain(..excess);
    next
}

/// A step produced now under `key_id`.
pub(crate) fn step(generation: u64, parent: u64, at: Timestamp, key_id: &KeyId) -> RefreshStep {
    RefreshStep {
        generation,
        parent,
        at,
        key_id: key_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    const GRACE: Duration = Duration::from_secs(10);
    const WINDOW: Duration = Duration::from_secs(3600);
    const RULES: Rules = Rules {
        grace: GRACE,
        lost_response_window: WINDOW,
    };
    const STRICT: Rules = Rules {
        grace: GRACE,
        lost_response_window: Duration::ZERO,
    };

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_000_000_000 + secs * 1000)
    }

    fn kid() -> KeyId {
        KeyId::generate(&SeededRandom::new(1))
    }

    /// A row at generation `steps.last().0` whose path is `steps` ((generation, parent, at)).
    fn state(steps: &[(u64, u64, i64)], used: bool) -> RefreshState {
        let key = kid();
        RefreshState {
            hash: [0; 32],
            generation: steps.last().map_or(0, |s| s.0),
            used,
            chain: steps
                .iter()
                .map(|&(g, p, at)| step(g, p, t(at), &key))
                .collect(),
        }
    }

    #[test]
    fn the_current_token_rotates_and_a_stranger_of_its_generation_is_reuse() {
        let s = state(&[(1, 0, 0), (2, 1, 5)], false);
        assert_eq!(decide(RULES, &s, 2, true, t(100), None), Verdict::Rotate);
        assert_eq!(
            decide(RULES, &s, 2, false, t(100), None),
            Verdict::Reused(Reuse::NotOnChain)
        );
        // A generation the row has never issued.
        assert_eq!(
            decide(RULES, &s, 9, false, t(100), None),
            Verdict::Reused(Reuse::NotOnChain)
        );
    }

    #[test]
    fn any_predecessor_rotated_out_inside_grace_converges() {
        // 0 -> 1 at t0, 1 -> 2 at t1, 2 -> 3 at t2: a chain inside one grace window.
        let s = state(&[(1, 0, 0), (2, 1, 1), (3, 2, 2)], true);
        for (g, from) in [(0, 0), (1, 1), (2, 2)] {
            assert_eq!(
                decide(RULES, &s, g, false, t(9), None),
                Verdict::Converge { from }
            );
        }
        // The grace window is measured from when each token was rotated out: at t10, token 0
        // (out at t0) is past it, token 1 (out at t1) is not.
        assert_eq!(
            decide(RULES, &s, 0, false, t(10), None),
            Verdict::Reused(Reuse::SuccessorUsed)
        );
        assert_eq!(
            decide(RULES, &s, 1, false, t(10), None),
            Verdict::Converge { from: 1 }
        );
    }

    #[test]
    fn a_lost_response_is_reissued_inside_the_window_only() {
        let s = state(&[(1, 0, 0)], false);
        assert_eq!(decide(RULES, &s, 0, false, t(10), None), Verdict::Reissue);
        assert_eq!(decide(RULES, &s, 0, false, t(3599), None), Verdict::Reissue);
        assert_eq!(
            decide(RULES, &s, 0, false, t(3600), None),
            Verdict::Reused(Reuse::LostResponseExpired)
        );
        // Strict: no tolerance at all.
        assert_eq!(
            decide(STRICT, &s, 0, false, t(10), None),
            Verdict::Reused(Reuse::LostResponseExpired)
        );
        // Once the successor is used, the old token is theft.
        let used = state(&[(1, 0, 0)], true);
        assert_eq!(
            decide(RULES, &used, 0, false, t(10), None),
            Verdict::Reused(Reuse::SuccessorUsed)
        );
        // Only the parent of the current pair can be a lost response: an older token's
        // successor was presented (that is how the chain went on).
        let longer = state(&[(1, 0, 0), (2, 1, 20)], false);
        assert_eq!(
            decide(RULES, &longer, 0, false, t(40), None),
            Verdict::Reused(Reuse::SuccessorUsed)
        );
    }

    #[test]
    fn a_reissue_rotates_the_presented_token_out_again() {
        // 0 -> 1 at t0 (response lost), re-issued 0 -> 2 at t100: token 0 converges on 2 inside
        // grace of the re-issue, the abandoned 1 is reuse at any time.
        let s = state(&[(2, 0, 100)], false);
        assert_eq!(
            decide(RULES, &s, 0, false, t(105), None),
            Verdict::Converge { from: 0 }
        );
        for at in [101, 105, 200, 5000] {
            assert_eq!(
                decide(RULES, &s, 1, false, t(at), None),
                Verdict::Reused(Reuse::NotOnChain)
            );
        }
    }

    #[test]
    fn a_lost_compare_and_swap_converges_on_the_rivals_write_never_reuse() {
        // First look: token 5 was current (no step rotated it out). The rival rotated 5 -> 6.
        let s = state(&[(6, 5, 50)], false);
        let strict_no_grace = Rules {
            grace: Duration::ZERO,
            lost_response_window: Duration::ZERO,
        };
        assert_eq!(
            decide(strict_no_grace, &s, 5, false, t(50), Some(None)),
            Verdict::Converge { from: 0 }
        );
        // First look: token 5 was the parent of an unused 6 (a lost response); a twin request
        // re-issued 5 -> 7 first: converge on 7.
        let twin = state(&[(7, 5, 90)], false);
        assert_eq!(
            decide(RULES, &twin, 5, false, t(90), Some(Some(6))),
            Verdict::Converge { from: 0 }
        );
        // First look as above, but the owner rotated 6 -> 7 in between: 5's successor is now
        // used and the step that rotated 5 out is the one the first look saw: reuse.
        let owner = state(&[(6, 5, 0), (7, 6, 90)], false);
        assert_eq!(
            decide(RULES, &owner, 5, false, t(90), Some(Some(6))),
            Verdict::Reused(Reuse::SuccessorUsed)
        );
    }

    #[test]
    fn chains_are_pruned_to_the_grace_window_plus_the_last_step() {
        let key = kid();
        let s = state(&[(1, 0, 0), (2, 1, 31), (3, 2, 35)], false);
        let next = next_chain(&s.chain, step(4, 3, t(40), &key), false, GRACE, t(40));
        let gens: Vec<u64> = next.iter().map(|s| s.generation).collect();
        assert_eq!(gens, [2, 3, 4]);
        // A re-issue drops the abandoned last step.
        let again = next_chain(&next, step(5, 3, t(40), &key), true, GRACE, t(40));
        let gens: Vec<(u64, u64)> = again.iter().map(|s| (s.generation, s.parent)).collect();
        assert_eq!(gens, [(2, 1), (3, 2), (5, 3)]);
        // Never more than MAX_STEPS, even inside one grace window.
        let mut chain = Vec::new();
        for g in 1..=40u64 {
            chain = next_chain(&chain, step(g, g - 1, t(0), &key), false, GRACE, t(0));
        }
        assert_eq!(chain.len(), MAX_STEPS);
        assert_eq!(chain.last().map(|s| s.generation), Some(40));
    }
}
