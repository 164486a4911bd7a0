CREATE TABLE walk_points (
    walk_id     bigint NOT NULL REFERENCES walks (id) ON DELETE CASCADE,
    seq         integer NOT NULL CHECK (seq >= 0),
    recorded_at timestamptz NOT NULL,
    latitude    double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude   double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    PRIMARY KEY (walk_id, seq)
);
