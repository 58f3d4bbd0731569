// Server-sent events read from a fetch body. EventSource cannot send an Authorization header, so the console
// reads text/event-stream itself: "event:" and "data:" lines, a blank line ending each event, ":" comments
// (keep-alives) skipped, as the HTML standard's parser does.

/** One event: its type ("message" unless the server named one) and its data lines joined by "\n". */
export interface ServerEvent {
  type: string;
  data: string;
}

/** The most one event may hold before the stream is treated as broken; guards the page's memory. */
const MAX_EVENT_CHARS = 8 * 1024 * 1024;

export async function* readEvents(
  body: ReadableStream<Uint8Array>,
  signal: AbortSignal,
): AsyncGenerator<ServerEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const cancel = (): void => {
    void reader.cancel();
  };
  signal.addEventListener("abort", cancel, { once: true });
  let buffer = "";
  let type = "";
  let data: string[] = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        return;
      }
      buffer += decoder.decode(value, { stream: true });
      if (buffer.length > MAX_EVENT_CHARS) {
        throw new Error("an event of the stream is too large");
      }
      let newline: number;
      while ((newline = buffer.search(/\r\n|\n|\r/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (data.length > 0) {
            yield { type: type || "message", data: data.join("\n") };
          }
          type = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) {
          continue;
        }
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) {
          value = value.slice(1);
        }
        if (field === "event") {
          type = value;
        } else if (field === "data") {
          data.push(value);
        }
      }
    }
  } finally {
    signal.removeEventListener("abort", cancel);
    reader.releaseLock();
  }
}
