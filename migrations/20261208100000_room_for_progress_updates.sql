-- Every shipment updates its order's progress (orders) and the quantities of its lines
-- (order_lines), and every outcome event its order's counter (outcome_sequences). None of
-- those updates changes an indexed column (an order's phase changes once, when it completes),
-- so each can be a heap-only (HOT) update — a new row version on the same page and no new
-- index entries — but only when the page has room for it. At the default fillfactor (100)
-- pages are filled by the inserts, and most of these updates wrote a new entry into every
-- index of the table. Pages allocated from now on keep 30 % free for them.
alter table orders set (fillfactor = 70);
alter table order_lines set (fillfactor = 70);
alter table outcome_sequences set (fillfactor = 70);
