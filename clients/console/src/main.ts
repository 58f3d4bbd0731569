// The console's shell: sign-in, the navigation, and the hash routes of the four pages. A page gets the
// session and the route's parameters, and returns how to stop what it started (streams, timers).
import "./style.css";
import { deploymentsPage } from "./pages/deployments";
import { guardrailsPage } from "./pages/guardrails";
import { logsPage } from "./pages/logs";
import { modelsPage } from "./pages/models";
import type { Page } from "./pages/page";
import { savedToken, signIn, signOut, type Session } from "./session";
import { h, replace } from "./ui/dom";
import { errorBox } from "./ui/errors";

const PAGES: { path: string; title: string; page: Page }[] = [
  { path: "models", title: "Models", page: modelsPage },
  { path: "deployments", title: "Deployments", page: deploymentsPage },
  { path: "guardrails", title: "Guardrails", page: guardrailsPage },
  { path: "logs", title: "Logs", page: logsPage },
];

const root = document.getElementById("app") as HTMLElement;
let session: Session | undefined;
let stopPage: (() => void) | undefined;

function route(): { path: string; params: string[] } {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  return { path: parts[0] ?? "models", params: parts.slice(1) };
}

function signInView(message?: HTMLElement): HTMLElement {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "current-password",
    "aria-describedby": "token-hint",
  });
  const status = h("div", { "aria-live": "polite" }, message ?? null);
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to modelplane"),
    h("div", { class: "field" }, h("label", { for: "token" }, "Bearer token"), input),
    h(
      "small",
      { id: "token-hint", class: "hint" },
      "A token from `modelplane token create`; kept in this tab only. Leave it empty for a server without auth.",
    ),
    h("button", { type: "submit" }, "Sign in"),
    status,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    replace(status, h("p", {}, "Checking the token…"));
    signIn(input.value.trim())
      .then((signedIn) => {
        session = signedIn;
        render();
      })
      .catch((error: unknown) => replace(status, errorBox(error)));
  });
  queueMicrotask(() => input.focus());
  return h("main", { id: "main" }, form);
}

function shell(current: string, content: HTMLElement, signedIn: Session): HTMLElement {
  const role = signedIn.canWrite ? "read and write" : signedIn.canCheck ? "read, check text" : "read only";
  return h(
    "div",
    { class: "shell" },
    h("a", { class: "skip", href: "#main", onclick: skipToMain }, "Skip to content"),
    h(
      "header",
      {},
      h("span", { class: "brand" }, "modelplane"),
      h(
        "nav",
        { "aria-label": "Pages" },
        h(
          "ul",
          {},
          PAGES.map((entry) =>
            h(
              "li",
              {},
              h("a", { href: `#/${entry.path}`, "aria-current": entry.path === current ? "page" : undefined }, entry.title),
            ),
          ),
        ),
      ),
      h("span", { class: "role", "data-testid": "access" }, role),
      h(
        "button",
        {
          type: "button",
          class: "secondary",
          onclick: () => {
            signOut();
            session = undefined;
            render();
          },
        },
        "Sign out",
      ),
    ),
    content,
  );
}

function skipToMain(event: Event): void {
  event.preventDefault();
  document.getElementById("main")?.focus();
}

function render(): void {
  stopPage?.();
  stopPage = undefined;
  if (!session) {
    document.title = "Sign in · modelplane";
    replace(root, signInView());
    return;
  }
  const { path, params } = route();
  const entry = PAGES.find((candidate) => candidate.path === path) ?? PAGES[0]!;
  document.title = `${entry.title} · modelplane`;
  const main = h("main", { id: "main", tabindex: -1 });
  replace(root, shell(entry.path, main, session));
  stopPage = entry.page(main, { session, params });
}

window.addEventListener("hashchange", render);

const token = savedToken();
if (token === null) {
  render();
} else {
  replace(root, h("p", { class: "loading" }, "Signing in…"));
  signIn(token)
    .then((signedIn) => {
      session = signedIn;
      render();
    })
    .catch((error: unknown) => {
      signOut();
      replace(root, signInView(errorBox(error)));
    });
}
