//! The order in which one request tries a pool's upstreams: by priority tier, then within
//! each tier by the model's strategy. Whether an upstream is open or full is checked
//! again when its turn comes (`attempt.rs`); here it only steers the choice.

use crate::config::Strategy;
use crate::upstream::health::{clock, Pool};
use crate::upstream::Candidate;

/// `candidates` (in config order) in the order this request tries them.
pub fn attempt_order(
    mut candidates: Vec<Candidate>,
    strategy: Strategy,
    pool: &Pool,
) -> Vec<Candidate> {
    if candidates.len() < 2 {
        return candidates;
    }
    let tiered = candidates
        .windows(2)
        .any(|pair| pair[0].placement.priority != pair[1].placement.priority);
    if tiered {
        candidates.sort_by_key(|c| c.placement.priority); // stable: config order within a tier
    }
    if strategy == Strategy::Ordered {
        return candidates;
    }
    let turn = pool.next_turn();
    let now = Now {
        ms: clock::now_ms(),
        ns: clock::now_ns(),
    };
    let mut start = 0;
    while start < candidates.len() {
        let priority = candidates[start].placement.priority;
        let len = candidates[start..]
            .iter()
            .take_while(|c| c.placement.priority == priority)
            .count();
        arrange(&mut candidates[start..start + len], strategy, turn, now);
        start += len;
    }
    candidates
}

#[derive(Clone, Copy)]
struct Now {
    ms: u64,
    ns: u64,
}

fn available(candidate: &Candidate, now: Now) -> bool {
    candidate
        .health
        .available(candidate.placement.max_in_flight, now.ms)
}

fn arrange(tier: &mut [Candidate], strategy: Strategy, turn: u64, now: Now) {
    if tier.len() < 2 {
        return;
    }
    match strategy {
        Strategy::Ordered => {}
        Strategy::Weighted => weighted(tier, turn, now),
        Strategy::LeastBusy => {
            // Rotated first, so upstreams equally busy take turns.
            let len = tier.len();
            tier.rotate_left((turn % len as u64) as usize);
            tier.sort_by_cached_key(|c| (!available(c, now), c.health.in_flight()));
        }
        Strategy::Latency => latency(tier, turn, now),
    }
}

/// The first upstream drawn in proportion to the weights of the available ones, by a
/// low-discrepancy sequence over the pool's turns (so 3:1 weights give 3:1 over any
/// run of requests); the rest keep config order for fallback.
fn weighted(tier: &mut [Candidate], turn: u64, now: Now) {
    let weights: Vec<u64> = tier
        .iter()
        .map(|c| match available(c, now) {
            true => u64::from(c.placement.weight),
            false => 0,
        })
        .collect();
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return;
    }
    let point = (unit(turn.wrapping_mul(GOLDEN)) * total as f64) as u64;
    let mut reached = 0;
    for (index, weight) in weights.iter().enumerate() {
        reached += weight;
        if point < reached {
            tier[..=index].rotate_right(1);
            return;
        }
    }
}

/// Power of two choices: two available upstreams drawn at random, the one with the
/// lower cost (peak-EWMA time to first byte times requests in flight) first; the rest
/// follow by cost.
fn latency(tier: &mut [Candidate], turn: u64, now: Now) {
    let costs: Vec<(bool, f64)> = tier
        .iter()
        .map(|c| {
            let cost = c.health.latency.cost(c.health.in_flight(), now.ns);
            (!available(c, now), cost)
        })
        .collect();
    let mut order: Vec<usize> = (0..tier.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (costs[a], costs[b]);
        a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
    });
    let open = costs.iter().filter(|c| !c.0).count();
    if open >= 2 {
        let random = splitmix(turn);
        let first = (random % open as u64) as usize;
        let mut second = ((random >> 32) % (open as u64 - 1)) as usize;
        if second >= first {
            second += 1;
        }
        let pick = |i: usize| {
            order
                .iter()
                .copied()
                .filter(|&j| !costs[j].0)
                .nth(i)
                .unwrap_or(0)
        };
        let (a, b) = (pick(first), pick(second));
        let winner = if costs[a].1 <= costs[b].1 { a } else { b };
        order.retain(|&j| j != winner);
        order.insert(0, winner);
    }
    permute(tier, &order);
}

/// Reorders `items` in place so that `items[i]` becomes the old `items[order[i]]`.
fn permute<T>(items: &mut [T], order: &[usize]) {
    let mut position: Vec<usize> = (0..items.len()).collect();
    let mut holder: Vec<usize> = (0..items.len()).collect();
    for (place, &wanted) in order.iter().enumerate() {
        let from = position[wanted];
        items.swap(place, from);
        let displaced = holder[place];
        holder[from] = displaced;
        position[displaced] = from;
        holder[place] = wanted;
        position[wanted] = place;
    }
}

/// 2^64 / φ: successive multiples are spread as evenly as any sequence can be.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The top 53 bits of `bits` as a number in [0, 1).
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A well-mixed 64-bit number from a counter (SplitMix64).
fn splitmix(turn: u64) -> u64 {
    let mut z = turn.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::{permute, unit, GOLDEN};

    #[test]
    fn permute_moves_each_item_to_its_place() {
        let mut items = vec!['a', 'b', 'c', 'd'];
        permute(&mut items, &[2, 0, 3, 1]);
        assert_eq!(items, ['c', 'a', 'd', 'b']);
    }

    #[test]
    fn the_golden_sequence_splits_three_to_one_almost_exactly() {
        let first = (0..1000u64)
            .filter(|turn| unit(turn.wrapping_mul(GOLDEN)) * 4.0 < 3.0)
            .count();
        assert!((748..=752).contains(&first), "{first}");
    }
}
