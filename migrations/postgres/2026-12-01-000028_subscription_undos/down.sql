DROP TABLE subscription_undos;
