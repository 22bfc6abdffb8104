//! `[routing]` and `[[routing.models]]` as written: how a model's pool picks among its
//! upstreams, and the defaults of the circuit breaker, the retry budget and the probes.

use std::time::Duration;

use serde::Deserialize;

use super::upstream::UpstreamConfig;

/// `[routing]`. Every field has a default; with none set, upstreams are tried in config
/// order as before, and an upstream that keeps failing is skipped for a while.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    /// How a pool picks among the upstreams of one priority tier.
    pub strategy: Strategy,
    /// Consecutive failures (connect errors, 5xx, 429, first-byte timeouts) that open an
    /// upstream's circuit breaker.
    pub failure_threshold: u32,
    /// How long an opened upstream is skipped before one request may try it.
    pub cooldown_secs: u64,
    /// The longest an upstream stays open: doubled cooldowns and `Retry-After` stop here.
    pub max_cooldown_secs: u64,
    /// Retries may add at most this share of a pool's first attempts (last 10 s); one
    /// retry per second (ten per 10 s) is always allowed.
    pub retry_budget_percent: u32,
    /// Every this many seconds, each open upstream is probed (`GET {base_url}/models` or
    /// its `probe_path`); a good answer closes it. 0 = no probes.
    pub probe_interval_secs: u64,
    /// With `[limits] backend = "redis"`: every instance sees an upstream opened by any
    /// of them.
    pub share_health: bool,
    /// Per-model strategies, first match wins (an exact name before patterns).
    pub models: Vec<ModelRouting>,
}

impl Default for RoutingSection {
    fn default() -> Self {
        RoutingSection {
            strategy: Strategy::Ordered,
            failure_threshold: 3,
            cooldown_secs: 10,
            max_cooldown_secs: 300,
            retry_budget_percent: 20,
            probe_interval_secs: 0,
            share_health: false,
            models: Vec::new(),
        }
    }
}

/// One `[[routing.models]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRouting {
    /// A client-facing model name, or a pattern ending in `*`.
    pub model: String,
    pub strategy: Strategy,
}

/// How a pool picks among the available upstreams of its best tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Config order: the first available upstream, the next one on failure.
    #[default]
    Ordered,
    /// In proportion to each upstream's `weight`.
    Weighted,
    /// The upstream with the fewest requests in flight.
    LeastBusy,
    /// Power of two choices over a peak-EWMA of time to first byte, times requests in
    /// flight.
    Latency,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Ordered => "ordered",
            Strategy::Weighted => "weighted",
            Strategy::LeastBusy => "least_busy",
            Strategy::Latency => "latency",
        }
    }
}

/// One upstream's circuit-breaker settings: its own overrides over the `[routing]` ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failure_threshold: u32,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

impl RoutingSection {
    /// The strategy of `model`: an exact `[[routing.models]]` name, else the first
    /// pattern that covers it, else `strategy`.
    pub fn strategy_for(&self, model: &str) -> Strategy {
        if self.models.is_empty() {
            return self.strategy;
        }
        let exact = self.models.iter().find(|m| m.model == model);
        let pattern = || {
            self.models.iter().find(|m| {
                m.model
                    .strip_suffix('*')
                    .is_some_and(|prefix| model.starts_with(prefix))
            })
        };
        exact.or_else(pattern).map_or(self.strategy, |m| m.strategy)
    }

    /// `upstream`'s breaker: its own settings where given, these defaults elsewhere.
    pub fn breaker_for(&self, upstream: &UpstreamConfig) -> BreakerPolicy {
        let cooldown = upstream.cooldown_secs.unwrap_or(self.cooldown_secs).max(1);
        let max_cooldown = upstream
            .max_cooldown_secs
            .unwrap_or(self.max_cooldown_secs)
            .max(cooldown);
        BreakerPolicy {
            failure_threshold: upstream
                .failure_threshold
                .unwrap_or(self.failure_threshold)
                .max(1),
            cooldown: Duration::from_secs(cooldown),
            max_cooldown: Duration::from_secs(max_cooldown),
        }
    }

    /// The breaker of an upstream with no overrides.
    pub fn default_breaker(&self) -> BreakerPolicy {
        let cooldown = self.cooldown_secs.max(1);
        BreakerPolicy {
            failure_threshold: self.failure_threshold.max(1),
            cooldown: Duration::from_secs(cooldown),
            max_cooldown: Duration::from_secs(self.max_cooldown_secs.max(cooldown)),
        }
    }
}

/// Config checks for `[routing]` and the routing keys of `[[upstreams]]` (called by
/// `Config::validate`). `redis` says whether `[limits] backend = "redis"`.
pub fn validate(
    routing: &RoutingSection,
    upstreams: &[UpstreamConfig],
    redis: bool,
) -> Result<(), String> {
    if routing.share_health && !redis {
        return Err(
            "[routing] share_health = true needs [limits] backend = \"redis\" (health is shared through that Redis)".into(),
        );
    }
    if routing.failure_threshold == 0 || routing.cooldown_secs == 0 {
        return Err("[routing] failure_threshold and cooldown_secs must be above 0".into());
    }
    if routing.max_cooldown_secs < routing.cooldown_secs {
        return Err("[routing] max_cooldown_secs must be at least cooldown_secs".into());
    }
    if routing.retry_budget_percent > 100 {
        return Err("[routing] retry_budget_percent must be between 0 and 100".into());
    }
    for rule in &routing.models {
        if rule.model.is_empty() || rule.model.trim_end_matches('*').contains('*') {
            return Err(format!(
                "[[routing.models]] model {:?}: a name, or a pattern that only ends with '*'",
                rule.model
            ));
        }
    }
    for upstream in upstreams {
        let name = &upstream.name;
        if upstream.weight == 0 {
            return Err(format!("upstream {name:?}: weight must be at least 1"));
        }
        if upstream.failure_threshold == Some(0) || upstream.cooldown_secs == Some(0) {
            return Err(format!(
                "upstream {name:?}: failure_threshold and cooldown_secs must be above 0"
            ));
        }
        let policy = routing.breaker_for(upstream);
        if upstream
            .max_cooldown_secs
            .is_some_and(|max| max < policy.cooldown.as_secs())
        {
            return Err(format!(
                "upstream {name:?}: max_cooldown_secs must be at least its cooldown_secs"
            ));
        }
        if let Some(path) = &upstream.probe_path {
            let plain = path
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"#?\\".contains(&b));
            if path.is_empty() || !plain || path.split('/').any(|s| s == "..") {
                return Err(format!(
                    "upstream {name:?}: probe_path must be a plain path below base_url, e.g. \"models\""
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(model: &str, strategy: Strategy) -> ModelRouting {
        ModelRouting {
            model: model.into(),
            strategy,
        }
    }

    #[test]
    fn exact_names_beat_patterns_and_the_default_is_the_rest() {
        let routing = RoutingSection {
            models: vec![
                rule("gpt-*", Strategy::Weighted),
                rule("gpt-4o", Strategy::Latency),
            ],
            ..Default::default()
        };
        assert_eq!(routing.strategy_for("gpt-4o"), Strategy::Latency);
        assert_eq!(routing.strategy_for("gpt-4o-mini"), Strategy::Weighted);
        assert_eq!(routing.strategy_for("claude"), Strategy::Ordered);
    }
}
