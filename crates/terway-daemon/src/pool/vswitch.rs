//! vSwitch choice for new ENIs: filter out exhausted/blocked ones, then order by policy
//! (`random`, `ordered` = configuration order, `most` = most available IPs first).

use rand::seq::SliceRandom;
use rand::Rng;

use crate::config::VSwitchSelectionPolicy;

/// What the pool knows about a candidate vSwitch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VSwitchCandidate {
    /// `vsw-…`.
    pub id: String,
    /// Free addresses per the last DescribeVSwitches (`None` = unknown).
    pub available: Option<u64>,
}

/// Order the candidates to try, best first. Blocked vSwitches and ones known to be empty are dropped.
pub fn order_candidates<R: Rng + ?Sized>(
    candidates: &[VSwitchCandidate],
    policy: VSwitchSelectionPolicy,
    is_blocked: impl Fn(&str) -> bool,
    rng: &mut R,
) -> Vec<String> {
    let mut usable: Vec<&VSwitchCandidate> = candidates
        .iter()
        .filter(|c| !is_blocked(&c.id) && c.available != Some(0))
        .collect();
    match policy {
        VSwitchSelectionPolicy::Ordered => {}
        VSwitchSelectionPolicy::Random => usable.shuffle(rng),
        // Unknown counts go last; a stable sort keeps configuration order among equals.
        VSwitchSelectionPolicy::Most => {
            usable.sort_by_key(|c| std::cmp::Reverse(c.available.unwrap_or(0)))
        }
    }
    usable.into_iter().map(|c| c.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn c(id: &str, available: Option<u64>) -> VSwitchCandidate {
        VSwitchCandidate {
            id: id.into(),
            available,
        }
    }

    #[test]
    fn ordered_keeps_config_order_and_drops_blocked_and_empty() {
        let cands = [
            c("a", Some(5)),
            c("b", Some(0)),
            c("c", Some(100)),
            c("d", None),
        ];
        let mut rng = StdRng::seed_from_u64(1);
        let got = order_candidates(
            &cands,
            VSwitchSelectionPolicy::Ordered,
            |id| id == "c",
            &mut rng,
        );
        assert_eq!(got, vec!["a", "d"]);
    }

    #[test]
    fn most_sorts_by_available_descending() {
        let cands = [
            c("a", Some(5)),
            c("b", None),
            c("c", Some(100)),
            c("d", Some(7)),
        ];
        let mut rng = StdRng::seed_from_u64(1);
        let got = order_candidates(&cands, VSwitchSelectionPolicy::Most, |_| false, &mut rng);
        assert_eq!(got, vec!["c", "d", "a", "b"]);
    }

    #[test]
    fn random_is_a_permutation_and_varies() {
        let cands: Vec<_> = (0..8).map(|i| c(&format!("v{i}"), Some(1))).collect();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut got =
                order_candidates(&cands, VSwitchSelectionPolicy::Random, |_| false, &mut rng);
            seen.insert(got.clone());
            got.sort();
            assert_eq!(got, cands.iter().map(|c| c.id.clone()).collect::<Vec<_>>());
        }
        assert!(seen.len() > 1, "random policy never changed the order");
    }

    #[test]
    fn all_blocked_gives_nothing() {
        let cands = [c("a", Some(5))];
        let mut rng = StdRng::seed_from_u64(1);
        assert!(
            order_candidates(&cands, VSwitchSelectionPolicy::Random, |_| true, &mut rng).is_empty()
        );
    }
}
