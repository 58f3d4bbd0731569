// Decoding a failed call into its ModelplaneError, from the rich status the server sends.
//
// The server puts a google.rpc.Status in the `grpc-status-details-bin` trailer: its ErrorInfo gives the
// reason and its metadata, BadRequest the field violations, RetryInfo the wait before a retry, and the
// registry's ResolveModelFailure the rejected candidates. Connect decodes the trailer; this module turns
// its details into typed fields and picks the class: the reason's when the server sent a known reason with
// its own code, else the code's.

import { Code, ConnectError } from "@connectrpc/connect";
import { createRegistry, type MessageShape } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import {
  BadRequestSchema,
  DebugInfoSchema,
  ErrorInfoSchema,
  HelpSchema,
  LocalizedMessageSchema,
  PreconditionFailureSchema,
  QuotaFailureSchema,
  RequestInfoSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import { REASON_CLASSES } from "./gen/modelplane/v1/error_reason_errors.js";
import { ResolveModelFailureSchema } from "./gen/modelplane/v1/registry_pb.js";
import {
  CLASS_BY_CODE,
  DOMAIN,
  ModelplaneError,
  REQUEST_ID_HEADER,
  Unknown,
  type ErrorClass,
  type FieldViolation,
} from "./error-classes.js";

export * from "./error-classes.js";
// One class per ErrorReason value of the contract (ModelNotFound, AliasConflict, ...), and the Reason type.
export * from "./gen/modelplane/v1/error_reason_errors.js";

/** The class for a status: the reason's class when it is a modelplane reason sent with its own code, else
 * the code's class, so an unknown or mismatched reason never hides the code. */
export function errorClassFor(code: Code, reason = "", domain = DOMAIN): ErrorClass {
  const codeClass = CLASS_BY_CODE.get(code) ?? Unknown;
  if (domain === DOMAIN || domain === "") {
    const reasonClass = REASON_CLASSES.get(reason);
    if (reasonClass !== undefined && reasonClass.code === code) {
      return reasonClass;
    }
  }
  return codeClass;
}

// Detail types decoded from google.protobuf.Any; any other detail is left out of `details`.
const DETAIL_TYPES = createRegistry(
  ErrorInfoSchema,
  BadRequestSchema,
  RetryInfoSchema,
  RequestInfoSchema,
  DebugInfoSchema,
  QuotaFailureSchema,
  PreconditionFailureSchema,
  ResourceInfoSchema,
  HelpSchema,
  LocalizedMessageSchema,
  ResolveModelFailureSchema,
);

/** The ModelplaneError for anything a Connect call threw (a ConnectError, an abort, a network error). */
export function fromConnectError(thrown: unknown): ModelplaneError {
  if (thrown instanceof ModelplaneError) {
    return thrown;
  }
  const error = ConnectError.from(thrown);
  const details = error.findDetails(DETAIL_TYPES);
  let reason = "";
  let domain = DOMAIN;
  let metadata: Record<string, string> = {};
  const fieldViolations: FieldViolation[] = [];
  let retryAfterMs: number | undefined;
  let requestId: string | undefined;
  for (const detail of details) {
    if (detail.$typeName === ErrorInfoSchema.typeName) {
      const info = detail as MessageShape<typeof ErrorInfoSchema>;
      ({ reason, domain } = info);
      metadata = { ...info.metadata };
    } else if (detail.$typeName === BadRequestSchema.typeName) {
      const bad = detail as MessageShape<typeof BadRequestSchema>;
      fieldViolations.push(...bad.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
    } else if (detail.$typeName === RetryInfoSchema.typeName) {
      const retry = detail as MessageShape<typeof RetryInfoSchema>;
      retryAfterMs = retry.retryDelay === undefined ? undefined : durationMs(retry.retryDelay);
    } else if (detail.$typeName === RequestInfoSchema.typeName) {
      const info = detail as MessageShape<typeof RequestInfoSchema>;
      requestId = info.requestId || requestId;
    }
  }
  requestId = error.metadata.get(REQUEST_ID_HEADER) ?? requestId;
  const cls = errorClassFor(error.code, reason, domain);
  return new cls(error.rawMessage, {
    reason,
    domain,
    metadata,
    fieldViolations,
    retryAfterMs,
    requestId,
    details,
    headers: error.metadata,
    cause: error,
  });
}
