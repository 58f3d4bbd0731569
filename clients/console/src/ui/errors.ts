// How a failed call reads on the page: an alert with the status code, the server's message, its reason and
// the fields it named; a filter error points at its position in the filter text.
import { ApiError, filterErrorPosition } from "../api/status";
import { h } from "./dom";

/** An alert for any error a call threw. */
export function errorBox(error: unknown): HTMLElement {
  if (!(error instanceof ApiError)) {
    const text = error instanceof Error ? error.message : String(error);
    return h("div", { class: "error", role: "alert" }, text);
  }
  return h(
    "div",
    { class: "error", role: "alert" },
    h("strong", {}, error.codeName),
    error.reason ? h("span", { class: "reason" }, ` ${error.reason}`) : null,
    h("p", {}, error.message),
    error.fieldViolations.length > 0
      ? h(
          "ul",
          {},
          error.fieldViolations.map((violation) => h("li", {}, h("code", {}, violation.field), `: ${violation.description}`)),
        )
      : null,
  );
}

/**
 * The error of a filter the server refused, shown under the filter with a caret at the position it names;
 * the input's caret moves there too. Other errors read as errorBox does.
 */
export function filterErrorBox(error: unknown, input: HTMLInputElement): HTMLElement {
  const violation = error instanceof ApiError ? error.violation("filter") : undefined;
  const where = violation ? filterErrorPosition(violation.description) : undefined;
  if (!where) {
    return errorBox(error);
  }
  const text = input.value;
  const index = Math.min(Math.max(where.position - 1, 0), text.length);
  input.setAttribute("aria-invalid", "true");
  input.setSelectionRange(index, Math.min(index + 1, text.length));
  return h(
    "div",
    { class: "error filter-error", role: "alert", "data-position": where.position },
    h("p", {}, `The filter is not valid at position ${where.position}: ${where.message}`),
    h(
      "pre",
      { "aria-hidden": "true" },
      h("span", {}, text.slice(0, index)),
      h("mark", {}, text.slice(index, index + 1) || " "),
      h("span", {}, text.slice(index + 1)),
      "\n",
      `${" ".repeat(index)}^`,
    ),
  );
}
