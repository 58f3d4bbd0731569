// Building the page from TypeScript without a framework: `h` makes an element with attributes, properties
// and children; every text goes in as a text node, so nothing from the server is ever parsed as HTML.

type Child = Node | string | number | false | null | undefined;
type Attributes = Record<string, string | number | boolean | undefined | EventListener>;

/** An element: `on*` keys add listeners, booleans set or drop the attribute, the rest are attributes. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Attributes = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) {
      continue;
    }
    if (typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(parent: Node, children: (Child | Child[])[]): void {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) {
      continue;
    }
    parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces every child of `parent`. */
export function replace(parent: Element, ...children: (Child | Child[])[]): void {
  parent.replaceChildren();
  append(parent, children);
}

let uniqueCounter = 0;

/** An id no other element of the page has, for label/for and aria-describedby pairs. */
export function uniqueId(prefix: string): string {
  uniqueCounter += 1;
  return `${prefix}-${uniqueCounter}`;
}

/** A labelled form field: the label, the control, and an optional hint tied to it for screen readers. */
export function field(labelText: string, control: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement, hint?: string): HTMLElement {
  control.id ||= uniqueId("field");
  const parts: Child[] = [h("label", { for: control.id }, labelText), control];
  if (hint) {
    const hintId = uniqueId("hint");
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("small", { id: hintId, class: "hint" }, hint));
  }
  return h("div", { class: "field" }, ...parts);
}

/** A table with a caption, column headings and rows; an empty body says `empty`. */
export function table(caption: string, headings: string[], rows: Child[][], empty = "Nothing yet."): HTMLElement {
  const body =
    rows.length === 0
      ? [h("tr", {}, h("td", { colspan: headings.length, class: "empty" }, empty))]
      : rows.map((cells) => h("tr", {}, ...cells.map((cell) => h("td", {}, cell))));
  return h(
    "div",
    { class: "table-wrap", tabindex: 0, role: "region", "aria-label": caption },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, ...headings.map((heading) => h("th", { scope: "col" }, heading)))),
      h("tbody", {}, ...body),
    ),
  );
}

/** A section of a page with its heading. */
export function section(title: string, ...children: (Child | Child[])[]): HTMLElement {
  const headingId = uniqueId("section");
  return h("section", { "aria-labelledby": headingId }, h("h2", { id: headingId }, title), ...children);
}
