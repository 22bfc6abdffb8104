-- Keys created at run time (admin API, `gatewayd keys`): the SHA-256 of each key,
-- never the key. `policy` is JSON: models, token budgets, expiry, disabled, and the
-- per-key rate and concurrency limits.
CREATE TABLE api_keys (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    policy TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Token usage per key, model and UTC day (YYYY-MM-DD), added to in batches. Budget
-- windows (day, month, total) are sums over these rows, so they survive restarts and a
-- Redis flush.
CREATE TABLE token_usage (
    key_name TEXT NOT NULL,
    model TEXT NOT NULL,
    day TEXT NOT NULL,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens BIGINT NOT NULL DEFAULT 0,
    requests BIGINT NOT NULL DEFAULT 0,
    estimated_requests BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_name, day, model)
);
