ALTER TABLE users DROP COLUMN daily_step_goal;
