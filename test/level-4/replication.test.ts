// mysql/replication.ts's rule D4 on GTID positions alone: which of an old
// primary's last GTIDs the new primary never had, so that the rejoin rebuilds
// it at once instead of following from a history that is not the primary's.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { missingFrom } from '../../mysql/gtids.ts';
import type { State } from '../../mysql/replication.ts';

const at = (gtid_binlog_pos: string, gtid_binlog_state = gtid_binlog_pos, gtid_slave_pos = '') => ({ gtid_binlog_pos, gtid_binlog_state, gtid_slave_pos }) as State;

describe('missingFrom (rule D4)', () => {
  it('finds nothing missing when the new primary has the old one\'s last write, replicated or copied', () => {
    assert.deepEqual(missingFrom(at('0-12-40', '0-11-30,0-12-40'), at('0-11-30')), []);
    assert.deepEqual(missingFrom(at('0-12-45', '0-11-30,0-12-45'), at('0-12-40')), []);
    // Copied by a dump at 0-11-30 (its binlog holds only what came after): its gtid_slave_pos says it had it.
    assert.deepEqual(missingFrom(at('0-12-35', '0-12-35', '0-11-30'), at('0-11-30')), []);
  });

  it('finds the old primary\'s unacknowledged write when it is ahead of the new primary', () => {
    assert.deepEqual(missingFrom(at('0-11-40', '0-12-30,0-11-40'), at('0-12-41', '0-12-41')), ['0-12-41']);
  });

  it('finds it when the new primary has since written past it, under the same sequence numbers', () => {
    assert.deepEqual(missingFrom(at('0-11-45', '0-12-40,0-11-45'), at('0-12-41', '0-12-41')), ['0-12-41']);
  });
});
