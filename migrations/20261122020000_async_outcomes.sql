-- Asynchronous outcomes: the notifications providers send (webhooks), the ones refused, and
-- the moment a provider accepted a capture whose result comes later.

-- The provider accepted this request with a pending answer (Adyen `received`, Checkout.com
-- 202, Gr4vy `pending`, PayPal `PENDING`, Hellgate `capturing`). From then on the request is
-- never sent again: a notification or a read-back settles it.
alter table captures add column accepted_at timestamptz;

-- Every notification a provider sent that passed verification (or that carries nothing the
-- worker trusts, such as PayPal's, which only prompt a read-back), one row per
-- (provider, provider reference, event type): a redelivery is a duplicate and changes nothing.
create table webhook_events (
    webhook_event_id    bigint generated always as identity primary key,
    -- the configured provider name (`providers.<name>`), from the URL the provider posted to
    provider            text not null,
    -- the provider's reference of what the event is about: Adyen's modification pspReference,
    -- Checkout.com's action id, Gr4vy's capture id, PayPal's capture id
    provider_reference  text not null,
    -- the provider's event type (`CAPTURE:true`, `payment_captured`, `capture.succeeded`…)
    event_type          text not null,
    -- what the worker did with it:
    --   applied    settled the capture it answers (succeeded, declined, or attention)
    --   read_back  made the capture due for a read-back now (an event the worker does not trust)
    --   unmatched  no capture of ours carries this reference
    --   ignored    an event the worker does not act on, or one for a capture already settled the same way
    --   conflict   contradicts a capture already settled the other way: an operator decides
    disposition         text not null
                        check (disposition in ('applied', 'read_back', 'unmatched', 'ignored', 'conflict')),
    capture_id          bigint references captures (capture_id),
    -- what the event said: succeeded | declined | failed; null for events without an outcome
    outcome             text,
    -- our reference (`order/cause`) and the authorization, as the provider echoed them
    merchant_reference  text,
    authorization_id    text,
    detail              text,
    -- the body as received, card-number-like digit runs masked, clipped
    body                text not null,
    received_at         timestamptz not null default now(),
    constraint webhook_events_dedupe unique (provider, provider_reference, event_type)
);
create index webhook_events_by_capture on webhook_events (capture_id) where capture_id is not null;
create index webhook_events_by_time on webhook_events (received_at);

-- Notifications refused, for on-call: nothing here changed any state.
create table webhook_rejections (
    webhook_rejection_id  bigint generated always as identity primary key,
    -- the provider name from the URL; `unknown` when no such provider is configured
    provider              text not null,
    --   bad_signature    missing or wrong signature (answered 401)
    --   not_configured   the provider signs its notifications but no webhook secret is set (401)
    --   malformed        not the provider's notification shape (400)
    --   unknown_provider no `providers.<name>` entry (404)
    --   not_supported    the provider sends no notifications the worker reads (404)
    reason                text not null
                          check (reason in ('bad_signature', 'not_configured', 'malformed',
                                            'unknown_provider', 'not_supported')),
    detail                text not null,
    -- the body as received, card-number-like digit runs masked, clipped
    body                  text,
    received_at           timestamptz not null default now()
);
create index webhook_rejections_by_time on webhook_rejections (received_at);

-- The expiry sweep reads open orders by their authorization's deadline.
create index orders_open_by_expiry on orders (authorization_expires_at) where phase = 'open';
create index orders_open_by_authorized_at on orders (authorized_at) where phase = 'open';
