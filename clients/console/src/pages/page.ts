// What every page of the console is: it fills `root` and returns how to stop what it started.
import type { Session } from "../session";

export interface PageContext {
  session: Session;
  /** The parts of the route after the page's own ("#/deployments/chat-prod" -> ["chat-prod"]). */
  params: string[];
}

export type Page = (root: HTMLElement, context: PageContext) => () => void;
