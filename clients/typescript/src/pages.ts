// Every item of a paged list (AIP-158): page after page until the server sends no next_page_token.

/** Yields the items of every page: `fetch(pageToken)` gets one page ("" for the first), `items` picks
 * the page's items, e.g. `allPages((pageToken) => registry.listModels({ pageToken }), (p) => p.models)`. */
export async function* allPages<Page extends { nextPageToken: string }, Item>(
  fetch: (pageToken: string) => Promise<Page>,
  items: (page: Page) => Iterable<Item>,
): AsyncGenerator<Item, void, undefined> {
  let pageToken = "";
  do {
    const page = await fetch(pageToken);
    yield* items(page);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
}
