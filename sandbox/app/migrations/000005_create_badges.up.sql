-- release 1.9: badges awarded for walking milestones
CREATE TABLE badges (
    code        text PRIMARY KEY,
    title       text NOT NULL,
    description text NOT NULL
);

CREATE TABLE user_badges (
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    badge_code text NOT NULL REFERENCES badges (code),
    awarded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, badge_code)
);

INSERT INTO badges (code, title, description) VALUES
    ('first_walk', 'First steps', 'Finished a first walk'),
    ('ten_thousand', 'Ten thousand', 'Walked 10,000 steps in one walk'),
    ('early_bird', 'Early bird', 'Started a walk before 6 a.m.');
