-- captures_by_order (order_id, sequence) repeats the index of the unique constraint
-- captures_sequence_unique (order_id, sequence): every lookup it served, that one serves. Every
-- capture row and every status change of one (the status is in partial indexes' predicates,
-- so those updates are not HOT) wrote an entry into both.
drop index if exists captures_by_order;
