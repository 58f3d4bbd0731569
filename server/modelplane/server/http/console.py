"""Serves the web console's built files at `/` of the HTTP address, from the package directory
modelplane/server/console/static/ when it exists (the console ships inside the wheel).

A path names a file under that directory or nothing: it is resolved and checked to stay inside, so no
`..`, encoded slash or symbolic link reaches another file. A path with no file and no extension is one
of the console's own pages (client-side routing) and gets index.html.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

import modelplane.server

STATIC_DIR = Path(modelplane.server.__file__).resolve().parent / "console" / "static"
INDEX = "index.html"
# Files are named by content hash when built, except index.html, which must be fetched anew each time.
_HEADERS = {"X-Content-Type-Options": "nosniff"}


class ConsoleFiles:
    """The console's static files under `root`."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self.root = root.resolve()

    @property
    def present(self) -> bool:
        return (self.root / INDEX).is_file()

    def file_for(self, url_path: str) -> Path | None:
        """The file to send for `url_path` (already percent-decoded), or None for 404."""
        parts = PurePosixPath("/" + url_path).parts[1:]
        if any(part in ("..", ".") or "\\" in part or "\x00" in part for part in parts):
            return None
        candidate = self.root.joinpath(*parts) if parts else self.root
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError):
            return None
        if not resolved.is_relative_to(self.root):
            return None
        if resolved.is_dir():
            resolved = resolved / INDEX
        if resolved.is_file():
            return resolved
        if parts and "." in parts[-1]:
            return None
        index = self.root / INDEX
        return index if index.is_file() else None

    async def serve(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("method not allowed", status_code=405, headers={"Allow": "GET, HEAD"})
        found = self.file_for(request.url.path)
        if found is None:
            return PlainTextResponse("not found", status_code=404, headers=_HEADERS)
        headers = dict(_HEADERS)
        if found.name == INDEX:
            headers["Cache-Control"] = "no-cache"
        return FileResponse(found, headers=headers)
