-- The expense service's database: one table, keyed by the client's id; the
-- shard's name for itself; and the cluster map this shard holds. Idempotent:
-- start-shards.sh applies it on every start.

CREATE DATABASE IF NOT EXISTS expenses CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS expenses.expenses (
  -- The shard key. ASCII with a binary collation: "a" and "A" are two ids, as
  -- they are two keys on the ring, and ORDER BY id is plain byte order, which
  -- keyset paging relies on.
  id              VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  name            VARCHAR(200)  NOT NULL,
  email           VARCHAR(254)  NOT NULL,
  category        VARCHAR(100)  NOT NULL,
  description     VARCHAR(2000) NOT NULL,
  link            VARCHAR(2048) NOT NULL,
  -- Money is exact: DECIMAL, never FLOAT.
  estimated_costs DECIMAL(12,2) NOT NULL,
  -- Real dates, so that MySQL can sort and compare them. Wire form: MM-DD-YYYY.
  submit_date     DATE          NOT NULL,
  status          VARCHAR(16)   NOT NULL DEFAULT 'pending',
  decision_date   DATE          NULL,
  -- Changed by every write, and kept by a copy to another shard: the ETag.
  -- Random rather than a counter, so that a record deleted and created again
  -- never repeats a version that a stale If-Match could still name.
  version         CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- Only a live record is the expense. A reshard's copy arrives as incoming
  -- and becomes live when the move commits it; the original becomes moved at
  -- that instant, and is forgotten when the reshard ends (api/cluster-map.ts).
  state           ENUM('live', 'incoming', 'moved') CHARACTER SET ascii NOT NULL DEFAULT 'live',
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Tables made before records had versions get one (MariaDB syntax).
ALTER TABLE expenses.expenses ADD COLUMN IF NOT EXISTS
  version CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '';
UPDATE expenses.expenses SET version = LEFT(MD5(CONCAT(id, RAND())), 16) WHERE version = '';
-- Tables made before reshards moved records in steps get a state.
ALTER TABLE expenses.expenses ADD COLUMN IF NOT EXISTS
  state ENUM('live', 'incoming', 'moved') CHARACTER SET ascii NOT NULL DEFAULT 'live';
-- A reshard finds its incoming copies, and a finished one forgets its moved
-- rows, without reading the whole table (or locking it against inserts).
ALTER TABLE expenses.expenses ADD INDEX IF NOT EXISTS state (state);

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

-- batch moves: where each id sits on the ring (ring.ts: MD5 of its bytes, as
-- 32 hex digits), computed by MySQL, and indexed after the state, so that a
-- reshard lists the live rows of the arcs that move (api/arcs.ts), not the
-- whole table (mysql/moves.ts).
ALTER TABLE expenses.expenses ADD COLUMN IF NOT EXISTS
  ring_position CHAR(32) CHARACTER SET ascii COLLATE ascii_bin AS (MD5(id)) PERSISTENT;
ALTER TABLE expenses.expenses ADD INDEX IF NOT EXISTS ring_position (state, ring_position, id);
