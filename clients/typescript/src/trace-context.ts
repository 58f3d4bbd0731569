// W3C trace context on every call: a Connect interceptor that asks an OpenTelemetry propagator for the
// active context's headers (traceparent, tracestate, baggage) and sends them, so the server's span of the
// call is a child of the caller's. The package does not depend on OpenTelemetry: `propagation` and
// `context` of "@opentelemetry/api" fit the two small interfaces below as they are.

import type { Interceptor } from "@connectrpc/connect";

/** Writes a context's trace headers into a carrier: OpenTelemetry's `propagation.inject`. */
export interface TracePropagation {
  inject(context: unknown, carrier: Record<string, string>): void;
}

/** Gives the context of the code running now: OpenTelemetry's `context.active`. */
export interface ActiveContext {
  active(): unknown;
}

/**
 * An interceptor that puts the active trace context on every call; pass it in `connect(target,
 * { interceptors: [traceContext(propagation, context)] })`. A header the call already has is kept, and
 * with no active span the propagator writes nothing, so nothing is sent.
 */
export function traceContext(propagation: TracePropagation, context: ActiveContext): Interceptor {
  return (next) => (request) => {
    const carrier: Record<string, string> = {};
    propagation.inject(context.active(), carrier);
    for (const [key, value] of Object.entries(carrier)) {
      if (!request.header.has(key)) {
        request.header.set(key, value);
      }
    }
    return next(request);
  };
}
