CREATE TABLE walks (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    distance_m integer NOT NULL DEFAULT 0 CHECK (distance_m >= 0),
    steps      integer NOT NULL DEFAULT 0 CHECK (steps >= 0),
    -- the app retries uploads: the same walk must not land twice
    CONSTRAINT walks_user_started_key UNIQUE (user_id, started_at),
    CONSTRAINT walks_ended_after_start CHECK (ended_at IS NULL OR ended_at >= started_at)
);

CREATE INDEX walks_started_at_idx ON walks (started_at);
