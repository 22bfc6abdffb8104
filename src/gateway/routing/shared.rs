//! Health shared through Redis (`[routing] share_health` with `[limits] backend =
//! "redis"`): every 250 ms this instance publishes the upstreams it opened (a key per
//! upstream holding the Unix millisecond its opening ends, expiring then) and removes the
//! keys of those it closed, then adopts what the others published. An upstream opened
//! anywhere is skipped everywhere within a tick; one closed early anywhere closes where
//! it was open only on another's word.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::attempt::announce;
use crate::limits::SharedRedis;
use crate::upstream::health::{clock, Health};
use crate::upstream::{Registry, Upstream};

/// How often health is published and read.
const TICK: Duration = Duration::from_millis(250);

/// What this instance last said in Redis.
#[derive(Default)]
struct Published {
    /// Upstream name → the Unix millisecond its published opening ends.
    until: HashMap<String, u64>,
    /// Upstreams open here at the last tick.
    open: HashSet<String>,
}

/// Shares health until `shutdown`, whenever `share_health` is on (a reload may switch it).
pub async fn run(registry: Arc<Registry>, redis: SharedRedis, shutdown: CancellationToken) {
    let mut published = Published::default();
    loop {
        if registry.routing().share_health {
            sync(&registry, &redis, &mut published).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

type Member = (Arc<dyn Upstream>, Arc<Health>);

async fn sync(registry: &Registry, redis: &SharedRedis, published: &mut Published) {
    let members = registry.members();
    if members.is_empty() {
        return;
    }
    let keys: Vec<String> = members
        .iter()
        .map(|(upstream, _)| redis.key(&format!("health:{}", tag(upstream.name()))))
        .collect();
    for (member, key) in members.iter().zip(&keys) {
        publish(member, key, redis, published).await;
    }
    let mut get = redis::cmd("MGET");
    get.arg(&keys);
    let Some(values) = redis.query::<Vec<Option<u64>>>(get).await else {
        return;
    };
    let (now, now_unix) = (clock::now_ms(), clock::unix_ms());
    for ((upstream, health), value) in members.iter().zip(values) {
        let transition = match value {
            Some(until) if until > now_unix => health.opened_by_peer(until - now_unix, now),
            // Gone before its time: whoever closed it removed it. (A key that simply
            // expired leaves this instance to try the upstream itself.)
            _ if health
                .open_for(now)
                .is_some_and(|left| left > TICK.as_millis() as u64) =>
            {
                health.closed_by_peer()
            }
            _ => None,
        };
        if let Some(transition) = transition {
            announce(upstream.name(), transition);
        }
    }
}

/// Says in Redis what changed here: an opening this instance decided (new or longer),
/// or the end of one.
async fn publish(member: &Member, key: &str, redis: &SharedRedis, published: &mut Published) {
    let (upstream, health) = member;
    let name = upstream.name();
    let (now, now_unix) = (clock::now_ms(), clock::unix_ms());
    match health.open_until() {
        Some(until) => {
            published.open.insert(name.to_string());
            let left = until.saturating_sub(now);
            let until_unix = now_unix + left;
            let known = published.until.get(name).copied().unwrap_or(0);
            if health.is_open_by_peer() || left == 0 || until_unix <= known + 100 {
                return;
            }
            let mut set = redis::cmd("SET");
            set.arg(key).arg(until_unix).arg("PX").arg(left);
            if redis.query::<()>(set).await.is_some() {
                published.until.insert(name.to_string(), until_unix);
            }
        }
        None => {
            if published.open.remove(name) {
                published.until.remove(name);
                let mut delete = redis::cmd("DEL");
                delete.arg(key);
                let _ = redis.query::<()>(delete).await;
            }
        }
    }
}

/// An upstream's part of its key: its name when plain, else a digest of it.
fn tag(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    match plain {
        true => name.to_string(),
        false => format!(
            "d:{}",
            hex::encode(&crate::config::keys::digest(name.as_bytes())[..16])
        ),
    }
}
