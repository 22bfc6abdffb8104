//! The health of every upstream by name, kept across SIGHUP: a reload that keeps an
//! upstream's name keeps its breaker state, its requests in flight and its latency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::breaker::Health;
use crate::config::BreakerPolicy;

#[derive(Default)]
pub struct HealthBook {
    /// Only touched when a registry is built; requests hold their own `Arc`s.
    by_name: Mutex<HashMap<String, Arc<Health>>>,
}

impl HealthBook {
    /// The health of each named upstream, with its new settings: kept for a name already
    /// known, new otherwise. Names no longer listed are forgotten.
    pub fn renew(&self, upstreams: &[(&str, BreakerPolicy)]) -> Vec<Arc<Health>> {
        let mut book = self
            .by_name
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = HashMap::with_capacity(upstreams.len());
        let healths = upstreams
            .iter()
            .map(|&(name, policy)| {
                let health = match book.remove(name) {
                    Some(kept) => {
                        kept.configure(policy);
                        kept
                    }
                    None => Arc::new(Health::new(name, policy)),
                };
                next.insert(name.to_string(), health.clone());
                health
            })
            .collect();
        *book = next;
        healths
    }
}
