-- Responses created at a native Responses upstream (responses = "native"). The upstream
-- keeps the content; gatewayd keeps only which key owns each id and which upstream holds
-- it, so follow-ups go to that upstream alone, and only for that key.
CREATE TABLE native_responses (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    upstream   TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX native_responses_by_age ON native_responses (created_at);
