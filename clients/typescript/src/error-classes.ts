// The classes of the errors a modelplane client throws: `ModelplaneError`, and one subclass per gRPC status
// code. The generated src/gen/modelplane/v1/error_reason_errors.ts adds one class per ErrorReason value,
// subclassing its code's class, so callers catch by meaning (ModelNotFound) or by code (NotFound).

import { Code } from "@connectrpc/connect";
import type { DescMessage, Message, MessageShape } from "@bufbuild/protobuf";

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
