-- Up Migration
--
-- 0019: a report of the oldest open transactions.
--
-- Why: the queue is the steps table (0013), updated in place; every claim and settlement leaves dead row versions
-- that vacuum can remove only once no transaction could still see them. One transaction left open (an idle BEGIN in
-- psql, a report that runs for minutes, a stuck client) holds that horizon back for the whole database: the queue's
-- partial indexes fill with dead entries that every claim steps over, and throughput falls for as long as it stays
-- open (measured from outside: a transaction held open 120 s brought the last 20 s to 52-79 % of the first 20 s).
-- This view names the culprits so an operator can end them (pg_terminate_backend) or fix the client.

-- ballast.oldest_transactions: every session of this database with an open transaction or a snapshot (backend_xmin),
-- oldest first: who (pid, role, application, client address), what state (active, idle in transaction, ...), since
-- when (xact_start) and for how long, how many transactions old its snapshot is (xmin_age: vacuum cannot clean
-- anything newer than it), and the start of its current or last statement. Read with the owner's rights, so an
-- operator sees every session, as pg_stat_activity shows it to a superuser.
create view ballast.oldest_transactions as
select a.pid, a.usename as role, a.application_name, a.client_addr, a.state, a.xact_start,
       date_trunc('second', ballast.now() - a.xact_start) as open_for,
       age(a.backend_xmin) as xmin_age,
       a.wait_event_type, a.wait_event,
       left(a.query, 200) as query
  from pg_stat_activity a
 where a.datname = current_database()
   and (a.xact_start is not null or a.backend_xmin is not null)
   and a.pid <> pg_backend_pid()
 order by a.xact_start nulls last;

comment on view ballast.oldest_transactions is
  'Open transactions of this database, oldest first: a long one holds vacuum back and slows the queue (see README, Guarantees).';

revoke all on ballast.oldest_transactions from public;
grant select on ballast.oldest_transactions to ballast_operator, ballast_reporter;
