DROP TABLE walk_points;
