DROP TABLE quota_crossings;
