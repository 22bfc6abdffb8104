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
