DROP TABLE payments;
DROP TABLE stripe_events;
DROP TABLE purchases;
DROP TABLE subscriptions;
DROP TABLE customers;
