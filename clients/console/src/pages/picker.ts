// A page about one resource at a time (a deployment, a policy): a list of them to choose from, the one the
// route names (or the first) shown below it, and the route following the choice, so it can be linked to.
import { h, field, replace } from "../ui/dom";
import { errorBox } from "../ui/errors";

export interface ResourcePage {
  title: string;
  /** The chooser's label: "Deployment". */
  label: string;
  /** The page's route: "guardrails". */
  route: string;
  /** The resources' collection in their names: "policies". */
  collection: string;
  /** The id the route names, if any. */
  chosen: string | undefined;
  /** Every resource's name ("deployments/chat-prod"), in the order to offer them. */
  list: () => Promise<string[]>;
  /** Shows the named resource in `detail`; returns how to stop what it started. */
  show: (detail: HTMLElement, name: string) => () => void;
}

export function resourcePage(root: HTMLElement, page: ResourcePage): () => void {
  const picker = h("select", { name: page.collection });
  const detail = h("div");
  let stop: (() => void) | undefined;
  replace(root, h("h1", {}, page.title), field(page.label, picker), detail);
  picker.addEventListener("change", () => {
    location.hash = `#/${page.route}/${picker.value}`;
  });
  page
    .list()
    .then((names) => {
      const ids = names.map((name) => name.slice(page.collection.length + 1));
      replace(picker, ids.map((id) => h("option", { value: id }, id)));
      const chosen = page.chosen ?? ids[0];
      if (chosen === undefined) {
        replace(detail, h("p", {}, `No ${page.label.toLowerCase()} yet.`));
        return;
      }
      picker.value = chosen;
      stop = page.show(detail, `${page.collection}/${chosen}`);
    })
    .catch((error: unknown) => replace(detail, errorBox(error)));
  return () => stop?.();
}
