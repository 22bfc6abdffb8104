//! The Lua scripts that make each shared-limit decision one atomic step inside Redis.
//!
//! Times come from Redis (`TIME`), so instances whose clocks disagree still agree on
//! every limit. Times are integer microseconds, written with `%.0f` so Lua never rounds
//! them to 14 digits. Both keys of a script share a `{hash tag}`, so Redis Cluster
//! keeps them in one slot.

use std::sync::LazyLock;

use redis::Script;

/// Concurrency slot first (a request refused for concurrency spends no rate quota),
/// then the GCRA rate cell; a slot is written only when both admit.
///
/// KEYS: slots (sorted set: lease id → expiry), rate (GCRA theoretical arrival time).
/// ARGV: concurrent limit (0 = none), lease ttl µs, lease id, emission interval µs
/// (0 = no rate limit), burst. Returns {1, 0} (admitted) or {0, wait µs}.
pub static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
  if redis.call('ZCARD', KEYS[1]) >= limit then
    return {0, 1000000}
  end
end
local interval = tonumber(ARGV[4])
if interval > 0 then
  local tau = interval * tonumber(ARGV[5])
  local tat = tonumber(redis.call('GET', KEYS[2])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat - now > tau then
    return {0, new_tat - tau - now}
  end
  redis.call('SET', KEYS[2], string.format('%.0f', new_tat),
             'PX', math.ceil((new_tat - now) / 1000) + 1)
end
if limit > 0 then
  local ttl = tonumber(ARGV[2])
  redis.call('ZADD', KEYS[1], string.format('%.0f', now + ttl), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000) + 1000)
end
return {1, 0}
"#,
    )
});

/// Pushes a held lease's expiry forward; a lease already expired stays gone.
/// KEYS: slots. ARGV: lease ttl µs, lease id.
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[1])
if redis.call('ZADD', KEYS[1], 'XX', 'CH', string.format('%.0f', now + ttl), ARGV[2]) == 1 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000) + 1000)
end
return 0
"#,
    )
});

/// Counts one failed authentication from an address (GCRA); over quota, blocks the
/// address until the cell allows again and returns the wait.
/// KEYS: failures (GCRA cell), block (exists while blocked). ARGV: interval µs, burst.
/// Returns 0 (counted, not over quota) or the wait in µs.
pub static AUTH_FAILED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > tau then
  local wait = new_tat - tau - now
  redis.call('SET', KEYS[2], '1', 'PX', math.ceil(wait / 1000))
  return wait
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
           'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
"#,
    )
});

/// Reserves tokens against every budget window of one key, or against none.
///
/// A counter holds a key's tokens (spent plus reserved) in one window period. One that
/// is missing (a new period, a restart of Redis, a FLUSHDB) is seeded from its floor,
/// the key's spend as the store has it, and one below its floor is raised to it: the
/// store is the truth, so no flush or restart ever resets a window.
///
/// KEYS: one counter per window. ARGV: the reservation, then per window its limit, its
/// floor and its expiry (Unix seconds; 0 = a sliding ttl for the total, which never
/// ends). Returns 0 (reserved everywhere) or the 1-based index of the first window the
/// reservation would pass (nothing written).
pub static BUDGET_RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local amount = tonumber(ARGV[1])
local next = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 * i - 1])
  local floor = tonumber(ARGV[3 * i])
  local count = tonumber(redis.call('GET', key)) or floor
  if count < floor then count = floor end
  if count + amount > limit then
    return i
  end
  next[i] = count + amount
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.0f', next[i]))
  local expire_at = tonumber(ARGV[3 * i + 1])
  if expire_at > 0 then
    redis.call('EXPIREAT', key, expire_at)
  else
    redis.call('EXPIRE', key, 3024000)
  end
end
return 0
"#,
    )
});

/// Settles a reservation: every window moves by `spent - reserved` (a refund is a settle
/// with nothing spent). A counter that went missing since the reservation (FLUSHDB, a
/// Redis restart) lost the reservation with it: it is seeded from its floor plus what
/// was spent, so the turn is counted once, neither lost nor counted twice.
///
/// KEYS: one counter per window. ARGV: reserved, spent, then per window its floor and
/// its expiry (as for BUDGET_RESERVE). Returns 0.
pub static BUDGET_SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local reserved = tonumber(ARGV[1])
local spent = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key))
  if count then
    count = count + spent - reserved
    if count < 0 then count = 0 end
  else
    count = tonumber(ARGV[2 * i + 1]) + spent
  end
  redis.call('SET', key, string.format('%.0f', count))
  local expire_at = tonumber(ARGV[2 * i + 2])
  if expire_at > 0 then
    redis.call('EXPIREAT', key, expire_at)
  else
    redis.call('EXPIRE', key, 3024000)
  end
end
return 0
"#,
    )
});
