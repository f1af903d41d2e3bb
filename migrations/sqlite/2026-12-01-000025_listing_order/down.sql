DROP INDEX subscriptions_listing; DROP INDEX purchases_listing; DROP INDEX audit_log_trail;
