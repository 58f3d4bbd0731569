// Where a broken watch reopens (start_revision is inclusive) and which repeats it drops: no I/O.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { WatchPosition } from "../src/index.js";

const change = (revision: bigint) => ({ event: { case: "change" as const, value: { revision } } });
const progress = (revision: bigint) => ({ event: { case: "progress" as const, value: { revision } } });

describe("WatchPosition", () => {
  test("after a progress mark at R the watch reopens at R + 1", () => {
    const position = new WatchPosition(0n);
    assert.equal(position.reopen(), 0n);
    assert.ok(position.receive(progress(7n)));
    assert.equal(position.reopen(), 8n);
  });

  test("after a change at R it reopens at R and drops the changes of R already seen", () => {
    const position = new WatchPosition(1n);
    position.reopen();
    for (const message of [change(1n), change(2n), change(3n), change(3n)]) {
      assert.ok(position.receive(message));
    }
    // Revision 3 holds (at least) two changes, both delivered: the new stream sends them again first.
    assert.equal(position.reopen(), 3n);
    assert.equal(position.receive(change(3n)), false);
    assert.equal(position.receive(change(3n)), false);
    // A third change of revision 3 was never delivered: it passes, and so does what follows.
    assert.ok(position.receive(change(3n)));
    assert.ok(position.receive(change(4n)));
    assert.equal(position.reopen(), 4n);
    assert.equal(position.receive(change(4n)), false);
    assert.ok(position.receive(progress(9n)));
    assert.equal(position.reopen(), 10n);
  });
});
