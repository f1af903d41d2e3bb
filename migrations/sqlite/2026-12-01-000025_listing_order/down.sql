DROP INDEX subscriptions_listing; DROP INDEX purchases_listing;
