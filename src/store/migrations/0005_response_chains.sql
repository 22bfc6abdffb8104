-- Stored responses form chains instead of each copying the whole context it continued:
-- a row keeps its parent's id and only the chat messages it added (its input and its
-- output). A row with no parent is the root of its chain and keeps its whole context:
-- every row stored before this migration, and each first response. A response made in
-- a conversation names the session and the seq its context runs up to instead.
ALTER TABLE responses ADD COLUMN parent_id TEXT;
ALTER TABLE responses ADD COLUMN session_id TEXT;
ALTER TABLE responses ADD COLUMN session_seq BIGINT NOT NULL DEFAULT 0;
-- 1 once deleted or expired while later responses still continue from it: it can no
-- longer be read or continued, and only its messages are kept, for those responses.
ALTER TABLE responses ADD COLUMN hidden BIGINT NOT NULL DEFAULT 0;
-- The row's stored bytes (context, input items, response): what it counts against its
-- owner's quota ([responses] max_bytes_per_key).
ALTER TABLE responses ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
UPDATE responses SET bytes = octet_length(context) + octet_length(input_items) + octet_length(response);
CREATE INDEX responses_by_parent ON responses (parent_id);
CREATE INDEX responses_hidden ON responses (id) WHERE hidden = 1;

-- Each owner's stored response bytes, kept in the same transaction as every insert,
-- delete and purge, so the quota check never sums the rows.
CREATE TABLE response_usage (
    owner TEXT PRIMARY KEY,
    bytes BIGINT NOT NULL
);
INSERT INTO response_usage (owner, bytes)
    SELECT owner, SUM(bytes) FROM responses GROUP BY owner;
