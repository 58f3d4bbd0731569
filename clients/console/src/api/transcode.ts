// The HTTP request of one RPC, derived from its google.api.http annotation in the contract: the console
// never spells a URL itself, so a path the protos change is a path the console follows.
import { getOption, type DescMethod, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { http } from "@gen/google/api/annotations_pb.js";

/** What fetch needs for one call: the method, the path with its query, and the JSON body if any. */
export interface HttpCall {
  verb: "GET" | "POST" | "PATCH" | "DELETE" | "PUT";
  url: string;
  body: string | undefined;
}

/** The proto field name's JSON name (protoc's rule: "model_version" -> "modelVersion"). */
export function jsonName(protoName: string): string {
  return protoName.replace(/_([a-z0-9])/g, (_match, letter: string) => letter.toUpperCase());
}

function ruleOf(method: DescMethod): { verb: HttpCall["verb"]; template: string; body: string } {
  const rule = getOption(method, http);
  const pattern = rule.pattern;
  switch (pattern.case) {
    case "get":
      return { verb: "GET", template: pattern.value, body: rule.body };
    case "post":
      return { verb: "POST", template: pattern.value, body: rule.body };
    case "patch":
      return { verb: "PATCH", template: pattern.value, body: rule.body };
    case "delete":
      return { verb: "DELETE", template: pattern.value, body: rule.body };
    case "put":
      return { verb: "PUT", template: pattern.value, body: rule.body };
    default:
      throw new Error(`${method.parent.typeName}.${method.name} has no HTTP binding in the contract`);
  }
}

/** Removes the value at a dotted JSON path from `request` and returns it (undefined when absent). */
function take(request: JsonObject, path: string[]): JsonValue | undefined {
  let node: JsonValue | undefined = request;
  for (const [index, key] of path.entries()) {
    if (node === null || typeof node !== "object" || Array.isArray(node)) {
      return undefined;
    }
    const object: JsonObject = node;
    if (index === path.length - 1) {
      const value = object[key];
      delete object[key];
      return value;
    }
    node = object[key];
  }
  return undefined;
}

/** A resource name in a path: each segment percent-encoded, the slashes between them kept. */
function pathValue(value: string): string {
  return value.split("/").map(encodeURIComponent).join("/");
}

/** Query parameters of the fields left over: nested messages as dotted names, lists repeated. */
function appendQuery(params: URLSearchParams, prefix: string, value: JsonValue): void {
  if (value === null) {
    return;
  }
  if (Array.isArray(value)) {
    for (const item of value) {
      appendQuery(params, prefix, item);
    }
  } else if (typeof value === "object") {
    for (const [key, inner] of Object.entries(value)) {
      appendQuery(params, prefix ? `${prefix}.${key}` : key, inner);
    }
  } else {
    params.append(prefix, String(value));
  }
}

/**
 * The HTTP call for `method` with `request` in proto3 JSON: path variables filled from their fields,
 * the body as the annotation says ("*" is every field not in the path), the rest in the query string.
 */
export function transcode(method: DescMethod, request: JsonObject): HttpCall {
  const { verb, template, body } = ruleOf(method);
  const remaining: JsonObject = structuredClone(request);
  const path = template.replace(/\{([a-z0-9_.]+)(?:=[^}]*)?\}/g, (_match, field: string) => {
    const value = take(remaining, field.split(".").map(jsonName));
    if (typeof value !== "string" || value === "") {
      throw new Error(`${method.name}: the request has no ${field}, which its URL needs`);
    }
    return pathValue(value);
  });
  let payload: string | undefined;
  if (body === "*") {
    payload = JSON.stringify(remaining);
  } else {
    if (body) {
      const part = take(remaining, body.split(".").map(jsonName));
      payload = JSON.stringify(part ?? {});
    }
    const params = new URLSearchParams();
    appendQuery(params, "", remaining);
    const query = params.toString();
    return { verb, url: query ? `${path}?${query}` : path, body: payload };
  }
  return { verb, url: path, body: payload };
}
