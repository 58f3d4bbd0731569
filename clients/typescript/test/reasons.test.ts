// The reason classes against the contract: one per ErrorReason value, each a subclass of the class of its
// status_code option; and how a status picks its class (no I/O).

import assert from "node:assert/strict";
import { getOption } from "@bufbuild/protobuf";
import { describe, test } from "node:test";
import {
  AliasConflict,
  CLASS_BY_CODE,
  Code,
  errorClassFor,
  Internal,
  NotFound,
  REASON_CLASSES,
  Unknown,
} from "../src/index.js";
import { ErrorReasonSchema, status_code } from "../src/gen/modelplane/v1/error_reason_pb.js";

describe("reason classes", () => {
  test("every ErrorReason value has a class of its status code, named after it", () => {
    const values = ErrorReasonSchema.values.filter((v) => v.number !== 0);
    assert.ok(values.length > 30, "the enum was read");
    assert.equal(REASON_CLASSES.size, values.length);
    for (const value of values) {
      const reason = value.name.replace(/^ERROR_REASON_/, "");
      const cls = REASON_CLASSES.get(reason);
      assert.ok(cls !== undefined, `${reason} has a class`);
      const code = getOption(value, status_code) as number as Code;
      assert.equal(cls.code, code, `${reason} is sent with code ${code}`);
      const codeClass = CLASS_BY_CODE.get(code);
      assert.ok(codeClass !== undefined && (cls === codeClass || cls.prototype instanceof codeClass));
      if (cls !== codeClass) {
        assert.equal(cls.reason, reason);
      }
    }
  });

  test("a reason named like its code's class is that class (INTERNAL)", () => {
    assert.equal(REASON_CLASSES.get("INTERNAL"), Internal);
  });

  test("a status picks its reason's class only for a modelplane reason sent with its own code", () => {
    assert.equal(errorClassFor(Code.Aborted, "ALIAS_CONFLICT"), AliasConflict);
    // Another code, another domain or an unknown reason: the code's class, so the code is never hidden.
    assert.equal(errorClassFor(Code.NotFound, "ALIAS_CONFLICT"), NotFound);
    assert.equal(errorClassFor(Code.Aborted, "ALIAS_CONFLICT", "googleapis.com"), CLASS_BY_CODE.get(Code.Aborted));
    assert.equal(errorClassFor(Code.NotFound, "SOMETHING_NEW"), NotFound);
    assert.equal(errorClassFor(99 as Code), Unknown);
  });

  test("an error built by hand carries its class's code and reason", () => {
    const error = new AliasConflict("moved meanwhile", { metadata: { current_version: "models/m/versions/2" } });
    assert.equal(error.code, Code.Aborted);
    assert.equal(error.reason, "ALIAS_CONFLICT");
    assert.equal(error.name, "AliasConflict");
    assert.equal(String(error), "ABORTED ALIAS_CONFLICT: moved meanwhile");
  });
});
