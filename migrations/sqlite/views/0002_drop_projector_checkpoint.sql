-- The projector no longer keeps a feed position here: the change feed keeps
-- each consumer's progress in the event store (store.Feed), and the
-- projector is just a handler of it. Its old checkpoint goes.
--
-- With it goes what 0001 says of this file: it can no longer be deleted and
-- rebuilt by itself. The feed's progress would still say the events were
-- projected, so the next event of a lost row would be a gap (ErrGap) and
-- the projector would stop. Refilling the views needs a rebuild that
-- replays every aggregate's events from sequence 1, which is future work.

DROP TABLE IF EXISTS projector_checkpoint;
