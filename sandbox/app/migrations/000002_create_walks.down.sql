DROP TABLE walks;
