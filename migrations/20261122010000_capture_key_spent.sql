-- The provider answered with an error it saved under the capture's current key and will only
-- replay it (Stripe's saved 500). Only then may a new key be taken, and only after reading the
-- payment back showed nothing was captured. A capture whose answer was merely lost keeps its
-- key: the request may still be running at the provider.
alter table captures add column key_spent boolean not null default false;
