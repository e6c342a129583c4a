-- The outcome events of captures that succeed are written once per statement instead of once
-- per row. The worker records its successes in batches (one statement for up to 256
-- captures), and the row trigger ran, for every capture of the batch, several statements of
-- its own: the shipments the capture carries, the order's counter, the event, and for a final
-- capture the order's sums, its counter again and `order.completed`. Set-based, a batch's
-- events take one statement: the same events, the same data, the same gap-free sequence per
-- order (an order's events numbered in the order of its captures, `order.completed` after the
-- final capture's own event).
--
-- PostgreSQL does not allow transition tables on a trigger with a column list, so this
-- trigger runs after every update of `captures` and keeps the rows whose status became
-- `succeeded`. The row trigger `outcome_capture_settled` keeps every other transition it
-- reports (declines, captures waiting for attention, releases and voids).

create function outcome_captures_succeeded() returns trigger language plpgsql as $$
begin
    with settled as (
        select n.*
          from new_rows n
          join old_rows o on o.capture_id = n.capture_id
         where n.kind = 'capture' and n.status = 'succeeded'
           and o.status is distinct from 'succeeded'
    ),
    events as (
        select s.order_id, s.sequence as capture_sequence, 1 as k,
               'capture.succeeded' as event_type,
               jsonb_build_object(
                   'capture_id', s.capture_id::text,
                   'provider', s.provider,
                   'authorization_id', s.authorization_id,
                   'amount', s.amount,
                   'currency', s.currency::text,
                   'is_final', s.is_final,
                   'shipment_ids', carried.shipment_ids,
                   'provider_reference', s.provider_reference) as data,
               s.traceparent
          from settled s
          -- the shipment that caused the capture and the earlier ones whose value it
          -- carries (deferred or coalesced shipments planned no capture of their own)
          cross join lateral (
              select coalesce(jsonb_agg(sh.shipment_id order by sh.shipped_at, sh.shipment_id),
                              '[]'::jsonb) as shipment_ids
                from shipments sh
               where sh.order_id = s.order_id
                 and (sh.shipment_id = s.cause_id and s.cause_kind = 'shipment'
                      or (sh.decision like 'nothing:%'
                          and sh.created_at <= (select coalesce(max(x.created_at), 'infinity')
                                                  from shipments x
                                                 where x.order_id = s.order_id
                                                   and x.shipment_id = s.cause_id
                                                   and s.cause_kind = 'shipment')
                          and not exists (select 1 from captures p
                                           where p.order_id = s.order_id
                                             and p.kind = 'capture'
                                             and p.sequence < s.sequence
                                             and p.cause_kind = 'shipment'
                                             and p.created_at >= sh.created_at)))
          ) carried
        union all
        -- the authorization's final capture succeeded: nothing more will be captured
        select s.order_id, s.sequence, 2, 'order.completed',
               jsonb_build_object(
                   'provider', s.provider,
                   'authorization_id', s.authorization_id,
                   'captured_amount', totals.captured,
                   'released_amount', coalesce(totals.released, 0),
                   'currency', s.currency::text),
               s.traceparent
          from settled s
          cross join lateral (
              select (select coalesce(sum(c.amount), 0)::bigint from captures c
                       where c.order_id = s.order_id and c.kind = 'capture'
                         and c.status = 'succeeded') as captured,
                     (select greatest(o.authorized_amount - coalesce((
                                 select sum(c.amount) from captures c
                                  where c.order_id = s.order_id
                                    and c.provider = s.provider
                                    and c.authorization_id = s.authorization_id
                                    and c.kind = 'capture' and c.status = 'succeeded'), 0),
                              0)::bigint
                        from orders o where o.order_id = s.order_id) as released
          ) totals
         where s.is_final
    ),
    counts as (
        select order_id, count(*) as n from events group by order_id
    ),
    -- each order's counter moves once by its number of events; orders in a fixed order, so
    -- concurrent statements lock their counters in the same order
    sequences as (
        insert into outcome_sequences as q (order_id, last_sequence)
        select order_id, n from counts order by order_id
        on conflict (order_id) do update set last_sequence = q.last_sequence + excluded.last_sequence
        returning q.order_id, q.last_sequence
    )
    insert into outcome_events (order_id, sequence, event_type, data, traceparent)
    select e.order_id,
           q.last_sequence - c.n
               + row_number() over (partition by e.order_id order by e.capture_sequence, e.k),
           e.event_type, e.data, e.traceparent
      from events e
      join counts c on c.order_id = e.order_id
      join sequences q on q.order_id = e.order_id
     order by e.order_id, e.capture_sequence, e.k;
    return null;
end $$;

create trigger outcome_captures_succeeded
    after update on captures
    referencing old table as old_rows new table as new_rows
    for each statement
    execute function outcome_captures_succeeded();

drop trigger outcome_capture_settled on captures;
create trigger outcome_capture_settled
    after update of status on captures
    for each row
    when (new.status is distinct from old.status
          and new.status in ('succeeded', 'declined', 'attention')
          and not (new.kind = 'capture' and new.status = 'succeeded'))
    execute function outcome_capture_settled();
