// A failed call as the console shows it: the google.rpc.Status JSON the server answers with, read into
// its code, message, ErrorInfo reason, BadRequest field violations and any other typed detail.
import { fromJson, type DescMessage, type JsonObject, type JsonValue, type MessageShape } from "@bufbuild/protobuf";
import { Code } from "@gen/google/rpc/code_pb.js";
import { BadRequestSchema, ErrorInfoSchema, type BadRequest_FieldViolation } from "@gen/google/rpc/error_details_pb.js";

/** One error of the API (or of the network under it), with what the server said about it. */
export class ApiError extends Error {
  constructor(
    readonly code: Code,
    message: string,
    readonly reason: string,
    readonly fieldViolations: readonly BadRequest_FieldViolation[],
    readonly details: readonly JsonObject[],
    readonly httpStatus: number,
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** The code's name as the contract spells it ("INVALID_ARGUMENT"). */
  get codeName(): string {
    return Code[this.code] ?? `CODE_${this.code}`;
  }

  /** The first detail of `schema`'s type, decoded; undefined when the status carries none. */
  detail<Desc extends DescMessage>(schema: Desc): MessageShape<Desc> | undefined {
    const found = this.details.find((detail) => typeUrlName(detail["@type"]) === schema.typeName);
    if (found === undefined) {
      return undefined;
    }
    const { "@type": _type, ...fields } = found;
    return fromJson(schema, fields, { ignoreUnknownFields: true });
  }

  /** The violation of one request field (e.g. "filter"), if the server named it. */
  violation(field: string): BadRequest_FieldViolation | undefined {
    return this.fieldViolations.find((violation) => violation.field === field);
  }
}

function typeUrlName(typeUrl: JsonValue | undefined): string {
  return typeof typeUrl === "string" ? typeUrl.slice(typeUrl.lastIndexOf("/") + 1) : "";
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The gRPC code an HTTP status stands for, when the body is not a Status (a proxy's page, say). */
function codeOfHttp(status: number): Code {
  switch (status) {
    case 400:
      return Code.INVALID_ARGUMENT;
    case 401:
      return Code.UNAUTHENTICATED;
    case 403:
      return Code.PERMISSION_DENIED;
    case 404:
      return Code.NOT_FOUND;
    case 409:
      return Code.ABORTED;
    case 429:
      return Code.RESOURCE_EXHAUSTED;
    case 503:
      return Code.UNAVAILABLE;
    case 504:
      return Code.DEADLINE_EXCEEDED;
    default:
      return Code.UNKNOWN;
  }
}

/** The ApiError of a google.rpc.Status in JSON, or of an HTTP status whose body is something else. */
export function statusError(body: unknown, httpStatus: number): ApiError {
  if (!isObject(body) || typeof body["code"] !== "number") {
    return new ApiError(codeOfHttp(httpStatus), `HTTP ${httpStatus}`, "", [], [], httpStatus);
  }
  const details = Array.isArray(body["details"]) ? body["details"].filter(isObject) : [];
  const error = new ApiError(
    body["code"] as Code,
    typeof body["message"] === "string" ? body["message"] : "",
    "",
    [],
    details,
    httpStatus,
  );
  const info = error.detail(ErrorInfoSchema);
  const badRequest = error.detail(BadRequestSchema);
  return new ApiError(
    error.code,
    error.message,
    info?.reason ?? "",
    badRequest?.fieldViolations ?? [],
    details,
    httpStatus,
  );
}

/** A network failure (server gone, connection cut) as an UNAVAILABLE ApiError. */
export function networkError(cause: unknown): ApiError {
  const text = cause instanceof Error ? cause.message : String(cause);
  return new ApiError(Code.UNAVAILABLE, `the server cannot be reached (${text})`, "", [], [], 0);
}

/** Where a filter error points: the 1-based position the server names ("position 12: ...") and the rest. */
export function filterErrorPosition(description: string): { position: number; message: string } | undefined {
  const match = /^position (\d+): (.*)$/s.exec(description);
  if (!match) {
    return undefined;
  }
  return { position: Number(match[1]), message: match[2] ?? "" };
}
