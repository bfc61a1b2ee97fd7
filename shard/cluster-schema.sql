-- The tables of the levels above the assignment, beside schema.sql's:
-- the rows of a move, who this shard is, and the cluster map it holds.
-- Idempotent: start-shards.sh applies it after schema.sql on every start.

-- A row's state (shard/rows.ts): live, incoming (a move's copy, not yet
-- committed) or moved (the original a move handed off: a tombstone), forgotten
-- when the reshard ends (api/cluster-map.ts, rules 3 and 4).
-- Tables made before records had versions get one (MariaDB syntax).
ALTER TABLE expenses.expenses ADD COLUMN IF NOT EXISTS
  version CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '';
UPDATE expenses.expenses SET version = LEFT(MD5(CONCAT(id, RAND())), 16) WHERE version = '';
-- Tables made before reshards moved records in steps get a state.
ALTER TABLE expenses.expenses ADD COLUMN IF NOT EXISTS
  state VARCHAR(8) CHARACTER SET ascii NOT NULL DEFAULT 'live';

-- Who this shard is: a name made once, when its database is created. Two
-- addresses that reach the same shard (127.0.0.1:3000 and localhost:3000)
-- report the same name, so a client can tell them from two shards.
CREATE TABLE IF NOT EXISTS expenses.shard (
  id CHAR(36) CHARACTER SET ascii NOT NULL PRIMARY KEY
) ENGINE=InnoDB;
INSERT INTO expenses.shard (id) SELECT UUID() FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM expenses.shard);

-- The cluster map this shard holds: which nodes the cluster has, with which
-- replicas, at which epoch, and the reshard under way, as JSON
-- (api/cluster-map.ts). One row, or none for a server that is not part of a
-- cluster. The epoch is a column too, so that a change is one compare-and-set.
CREATE TABLE IF NOT EXISTS expenses.cluster_map (
  one   TINYINT NOT NULL DEFAULT 1 PRIMARY KEY CHECK (one = 1),
  epoch BIGINT UNSIGNED NOT NULL,
  map   TEXT CHARACTER SET utf8mb4 NOT NULL
) ENGINE=InnoDB;

-- Where each id sits on the ring (ring.ts: MD5 of its bytes, as
-- 32 hex digits), computed by MySQL, and indexed after the state, so that a
-- reshard lists the live rows of the arcs that move (api/arcs.ts), not the
-- whole table (shard/move-rows.ts). The same index, by its first column, is
-- how a reshard finds its incoming copies, and a finished one forgets its
-- moved rows, without reading the whole table (or locking it against
-- inserts). An index of the state alone did that before: it was a second
-- index that every move step and every insert and delete wrote for nothing
-- (docs/performance.md, "A reshard against the disk"), so it goes.
ALTER TABLE expenses.expenses ADD COLUMN IF NOT EXISTS
  ring_position CHAR(32) CHARACTER SET ascii COLLATE ascii_bin AS (MD5(id)) PERSISTENT;
ALTER TABLE expenses.expenses ADD INDEX IF NOT EXISTS ring_position (state, ring_position, id);
ALTER TABLE expenses.expenses DROP INDEX IF EXISTS state;
