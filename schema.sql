-- The expense service's database: one table, keyed by the client's id.
-- Idempotent: start-shards.sh applies it on every start, and then
-- shard/cluster-schema.sql, the tables of the levels above the assignment.

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
  -- Plumbing (README, level 1). The version, changed by every write: the ETag.
  -- Random rather than a counter, so that a record deleted and created again
  -- never repeats a version that a stale If-Match could still name.
  version         CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- Only a live row is a record: later levels keep other rows of an id here,
  -- under its one primary key (shard/cluster-schema.sql).
  state           VARCHAR(8) CHARACTER SET ascii NOT NULL DEFAULT 'live',
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
