// The errors a modelplane client throws: one class per gRPC status code, and one per documented reason
// (see reasons.ts), decoded from the rich status the server sends.
//
// The server puts a google.rpc.Status in the `grpc-status-details-bin` trailer: its ErrorInfo gives the
// reason and its metadata, BadRequest the field violations, RetryInfo the wait before a retry, and the
// registry's ResolveModelFailure the rejected candidates. Connect decodes the trailer; this module turns
// its details into typed fields, so callers write `if (error instanceof NotFound)` or match a reason class.

import { Code, ConnectError } from "@connectrpc/connect";
import { createRegistry, type DescMessage, type Message, type MessageShape } from "@bufbuild/protobuf";
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
import { ResolveModelFailureSchema } from "./gen/modelplane/v1/registry_pb.js";

/** The ErrorInfo domain of every error a modelplane server sends. */
export const DOMAIN = "modelplane";
/** The response header carrying the server's id of the call, for finding its log lines. */
export const REQUEST_ID_HEADER = "x-request-id";

/** One bad field of a request: its path (e.g. "model_version.pricing.currency_code") and what is wrong. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

/** What a ModelplaneError is built from; every field but the message is optional. */
export interface ErrorFields {
  reason?: string | undefined;
  domain?: string | undefined;
  metadata?: Readonly<Record<string, string>> | undefined;
  fieldViolations?: readonly FieldViolation[] | undefined;
  retryAfterMs?: number | undefined;
  requestId?: string | undefined;
  details?: readonly Message[] | undefined;
  headers?: Headers | undefined;
  cause?: unknown;
}

/** A failed modelplane call: its status code, stable ErrorInfo reason and the details the server attached. */
export class ModelplaneError extends Error {
  /** The status code the classes below stand for; Unknown for the base class. */
  static readonly code: Code = Code.Unknown;
  /** The reason a class stands for; "" for the per-code classes, which accept any reason. */
  static readonly reason: string = "";

  /** The gRPC status code (Connect's `Code`, numbered as gRPC numbers them). */
  readonly code: Code;
  /** The ErrorInfo reason, e.g. "MODEL_NOT_FOUND"; "" when the server sent none. */
  readonly reason: string;
  readonly domain: string;
  /** ErrorInfo.metadata: facts about the failure, e.g. {"model": "models/chat"}. */
  readonly metadata: Readonly<Record<string, string>>;
  /** BadRequest.field_violations: each bad field of the request. */
  readonly fieldViolations: readonly FieldViolation[];
  /** Milliseconds the server asked the caller to wait before retrying (RetryInfo), when it said so. */
  readonly retryAfterMs: number | undefined;
  /** The server's id of the failed call, for finding its log lines. */
  readonly requestId: string | undefined;
  /** Every status detail, decoded when its type is known (ErrorInfo, BadRequest, ResolveModelFailure...). */
  readonly details: readonly Message[];
  /** The response headers and trailers of the failed call. */
  readonly headers: Headers;

  constructor(message: string, fields: ErrorFields = {}) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    const cls = new.target as typeof ModelplaneError;
    this.name = cls.name;
    this.code = cls.code;
    this.reason = fields.reason ?? cls.reason;
    this.domain = fields.domain ?? DOMAIN;
    this.metadata = { ...fields.metadata };
    this.fieldViolations = [...(fields.fieldViolations ?? [])];
    this.retryAfterMs = fields.retryAfterMs;
    this.requestId = fields.requestId;
    this.details = [...(fields.details ?? [])];
    this.headers = fields.headers ?? new Headers();
  }

  /** The status code's name as gRPC spells it, e.g. "NOT_FOUND". */
  get codeName(): string {
    return codeName(this.code);
  }

  /** The first detail of the given type, e.g. `error.detail(ResolveModelFailureSchema)`. */
  detail<Desc extends DescMessage>(schema: Desc): MessageShape<Desc> | undefined {
    return this.details.find((d) => d.$typeName === schema.typeName) as MessageShape<Desc> | undefined;
  }

  override toString(): string {
    const head = this.reason ? `${this.codeName} ${this.reason}` : this.codeName;
    const text = this.message ? `${head}: ${this.message}` : head;
    return this.requestId ? `${text} (request id ${this.requestId})` : text;
  }
}

/** "NOT_FOUND" for Code.NotFound: the names the gRPC specification and the server use. */
export function codeName(code: Code): string {
  return (Code[code] ?? "UNKNOWN").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase().replace("CANCELED", "CANCELLED");
}

// One class per status code (OK has none: it is not an error).

export class Cancelled extends ModelplaneError {
  static override readonly code: Code = Code.Canceled;
}
export class Unknown extends ModelplaneError {
  static override readonly code: Code = Code.Unknown;
}
/** The request is malformed; `fieldViolations` name each bad field. Retrying the same request fails. */
export class InvalidArgument extends ModelplaneError {
  static override readonly code: Code = Code.InvalidArgument;
}
export class DeadlineExceeded extends ModelplaneError {
  static override readonly code: Code = Code.DeadlineExceeded;
}
export class NotFound extends ModelplaneError {
  static override readonly code: Code = Code.NotFound;
}
export class AlreadyExists extends ModelplaneError {
  static override readonly code: Code = Code.AlreadyExists;
}
export class PermissionDenied extends ModelplaneError {
  static override readonly code: Code = Code.PermissionDenied;
}
export class ResourceExhausted extends ModelplaneError {
  static override readonly code: Code = Code.ResourceExhausted;
}
export class FailedPrecondition extends ModelplaneError {
  static override readonly code: Code = Code.FailedPrecondition;
}
/** A compare-and-set lost and nothing changed: re-read, then decide whether to try again. */
export class Aborted extends ModelplaneError {
  static override readonly code: Code = Code.Aborted;
}
export class OutOfRange extends ModelplaneError {
  static override readonly code: Code = Code.OutOfRange;
}
export class Unimplemented extends ModelplaneError {
  static override readonly code: Code = Code.Unimplemented;
}
export class Internal extends ModelplaneError {
  static override readonly code: Code = Code.Internal;
}
/** Transient: the call may be retried, after `retryAfterMs` when the server said so. */
export class Unavailable extends ModelplaneError {
  static override readonly code: Code = Code.Unavailable;
}
export class DataLoss extends ModelplaneError {
  static override readonly code: Code = Code.DataLoss;
}
export class Unauthenticated extends ModelplaneError {
  static override readonly code: Code = Code.Unauthenticated;
}

export type ErrorClass = typeof ModelplaneError;

/** The class of each status code. */
export const CLASS_BY_CODE: ReadonlyMap<Code, ErrorClass> = new Map(
  [
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
  ].map((cls) => [cls.code, cls] as const),
);

// The reason classes (reasons.ts) register here, so that decoding finds them without an import cycle.
const classByReason = new Map<string, ErrorClass>();

/** Makes `cls` the class decoded for ErrorInfo reason `cls.reason` (domain "modelplane"). */
export function registerReasonClass(cls: ErrorClass): void {
  classByReason.set(cls.reason, cls);
}

/** The class for a status: the reason's class when it is a modelplane reason sent with its own code, else
 * the code's class, so an unknown or mismatched reason never hides the code. */
export function errorClassFor(code: Code, reason = "", domain = DOMAIN): ErrorClass {
  const codeClass = CLASS_BY_CODE.get(code) ?? Unknown;
  if (domain === DOMAIN || domain === "") {
    const reasonClass = classByReason.get(reason);
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
