-- A parked message refused once its order arrived keeps its body until the sweeper has copied
-- it to the dead-letter queue (its delivery was acknowledged when it was parked). The sweeper
-- looks for such rows on every tick.
create index inbox_messages_dead_letter_owed on inbox_messages (updated_at)
    where status = 'rejected' and body is not null;
