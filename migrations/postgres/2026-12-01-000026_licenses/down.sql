DROP TABLE licenses;
