-- release 1.8: a personal daily goal instead of the fixed 8,000 steps
ALTER TABLE users
    ADD COLUMN daily_step_goal integer NOT NULL DEFAULT 8000
    CONSTRAINT users_daily_step_goal_positive CHECK (daily_step_goal > 0);
