-- Stored Responses API responses: each keeps the full chat context it continued from plus
-- its own input and output, so previous_response_id is one read with no chain walk.
CREATE TABLE responses (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    context     TEXT NOT NULL,
    input_items TEXT NOT NULL,
    response    TEXT NOT NULL
);
CREATE INDEX responses_by_age ON responses (created_at);

-- The next message seq of a session. Conversation items can be deleted one by one, so the
-- next seq can no longer be derived from message_count.
ALTER TABLE sessions ADD COLUMN next_seq BIGINT NOT NULL DEFAULT 0;
UPDATE sessions SET next_seq = message_count;
