-- Sessions and their messages. Message rows hold each message's JSON exactly as sent.
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    created_us    BIGINT NOT NULL,
    metadata      TEXT NOT NULL,
    system_prompt TEXT,
    message_count BIGINT NOT NULL DEFAULT 0,
    byte_count    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_owner ON sessions (owner, created_us DESC, id DESC);

CREATE TABLE messages (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    message    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
