"""Runs README.md's examples as a reader would: shell commands with bash, Python snippets as programs, and the
server the way `make run` starts it; the outputs go back to the test of the README to be checked.

A TypeScript example runs as an ES module with the package's tsx, importing the package as an installed one.
Every command runs in the repository's root (so `.venv/bin/...` and `make` resolve as in the README) with
the README's `127.0.0.1:50051` (and its HTTP address, `127.0.0.1:8080`) replaced by the live server's and
its example database URL by the test's own; the environment has no MODELPLANE_* variable of the
developer's, only the ones the `Sandbox` sets. A command the README marks "(Ctrl-C to stop)" runs until its
output shows what the test waits for (or a time limit passes) and is then interrupted with SIGINT, as
Ctrl-C would.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc

from tests.support.loopback import free_port
from tests.support.processes import wait_serving
from tests.support.readme_blocks import ShellCommand

__all__ = [
    "README_ADDRESS",
    "README_DATABASE_URL",
    "README_HTTP_ADDRESS",
    "REPOSITORY",
    "Output",
    "Sandbox",
    "Until",
    "free_address",
    "make_recipe",
    "started_server",
]

REPOSITORY = Path(__file__).resolve().parents[2]
# What the README's examples name, and the test replaces with its own server and database.
README_ADDRESS = "127.0.0.1:50051"
README_HTTP_ADDRESS = "127.0.0.1:8080"
README_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/modelplane"
# The TypeScript package: a ```ts example imports it as "@modelplane/client", built by `make ts-build`.
TYPESCRIPT_PACKAGE = REPOSITORY / "clients" / "typescript"
# Bounds one command or program so that a hang fails the test; not a performance expectation.
RUN_LIMIT = 90.0
# How long a streaming command may take to show what the test waits for before it is interrupted anyway.
STREAM_LIMIT = 30.0

# When a streaming command has shown enough: a test of its stdout and stderr so far.
Until = Callable[[str, str], bool]


@dataclass(frozen=True)
class Output:
    """What one command or program did: its exit code and output, and whether the test interrupted it."""

    text: str
    returncode: int
    stdout: str
    stderr: str
    interrupted: bool = False

    def describe(self) -> str:
        return (
            f"{self.text}\n-- exit code {self.returncode}"
            f"{' (interrupted)' if self.interrupted else ''}\n-- stdout:\n{self.stdout[-4000:]}"
            f"\n-- stderr:\n{self.stderr[-4000:]}"
        )


def free_address() -> str:
    """A loopback address with a port nobody listens on now."""
    return f"127.0.0.1:{free_port()}"


def make_recipe(target: str) -> list[str]:
    """The command line of a one-line Makefile target, with the Makefile's `$(NAME)` variables expanded."""
    text = (REPOSITORY / "Makefile").read_text()
    variables = dict(re.findall(r"^([A-Z_]+) :?= (.*)$", text, re.MULTILINE))
    recipe = re.search(rf"^{re.escape(target)}:[^\n]*\n\t(?P<line>[^\n]+)", text, re.MULTILINE)
    assert recipe is not None, f"the Makefile has no one-line `{target}` target"
    line = re.sub(r"\$\(([A-Z_]+)\)", lambda match: variables[match.group(1)], recipe.group("line"))
    return shlex.split(line)


@dataclass
class Sandbox:
    """Where the README's examples run: the live server's address and database, and a spare address."""

    address: str
    database_url: str
    workdir: Path
    # The live server's HTTP/JSON address (`make run` serves HTTP beside gRPC).
    http_address: str = ""
    # Where a `serve` without --address listens (MODELPLANE_ADDRESS), so it never meets the live server.
    spare_address: str = field(default_factory=free_address)

    def substitute(self, text: str) -> str:
        text = text.replace(README_ADDRESS, self.address).replace(README_DATABASE_URL, self.database_url)
        return text.replace(README_HTTP_ADDRESS, self.http_address) if self.http_address else text

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("MODELPLANE_")}
        # The token commands of the README name no database: they use this one, the live server's.
        env["MODELPLANE_DATABASE_URL"] = self.database_url
        env["MODELPLANE_ADDRESS"] = self.spare_address
        return env

    def shell(
        self, command: ShellCommand, assignments: Sequence[ShellCommand], until: Until | None
    ) -> Output:
        """Runs `command` with bash after the assignments that precede it in its block.

        With `until`, the command is a stream: it is interrupted as soon as until(stdout, stderr) holds.
        """
        lines = ["set -u", *(self.substitute(a.text) for a in assignments), self.substitute(command.text)]
        return self._run(["bash", "-c", "\n".join(lines)], command.text, REPOSITORY, until)

    def python(self, source: str, name: str) -> Output:
        """Writes `source` to a file of its own and runs it with this interpreter, as a program."""
        path = self.workdir / name
        path.write_text(self.substitute(source))
        return self._run([sys.executable, str(path)], source, self.workdir, None)

    def typescript(self, source: str, name: str) -> Output:
        """Builds the TypeScript package, then writes `source` to an ES module of its own and runs it with the
        package's tsx, as a program of a project that has `@modelplane/client` installed (linked)."""
        built = subprocess.run(
            ["make", "-s", "ts-build"], cwd=REPOSITORY, capture_output=True, text=True, check=False
        )
        assert built.returncode == 0, f"make ts-build failed:\n{built.stdout}\n{built.stderr}"
        scope = self.workdir / "node_modules" / "@modelplane"
        if not (scope / "client").exists():
            scope.mkdir(parents=True, exist_ok=True)
            (scope / "client").symlink_to(TYPESCRIPT_PACKAGE, target_is_directory=True)
        path = self.workdir / name
        path.write_text(self.substitute(source))
        tsx = TYPESCRIPT_PACKAGE / "node_modules" / ".bin" / "tsx"
        return self._run([str(tsx), str(path)], source, self.workdir, None)

    def _run(self, argv: list[str], text: str, cwd: Path, until: Until | None) -> Output:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own process group, so that an interrupt reaches every process of the command.
            start_new_session=True,
        )
        assert process.stdout is not None
        assert process.stderr is not None
        stdout: list[bytes] = []
        stderr: list[bytes] = []
        readers = [_reader(process.stdout, stdout), _reader(process.stderr, stderr)]
        interrupted = False
        try:
            if until is not None:
                give_up = time.monotonic() + STREAM_LIMIT
                while process.poll() is None and time.monotonic() < give_up:
                    if until(_decoded(stdout), _decoded(stderr)):
                        break
                    time.sleep(0.05)
                if process.poll() is None:
                    interrupted = True
                    os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=RUN_LIMIT)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            for reader in readers:
                reader.join(timeout=10)
            process.stdout.close()
            process.stderr.close()
        return Output(text, process.returncode, _decoded(stdout), _decoded(stderr), interrupted)


def _decoded(chunks: list[bytes]) -> str:
    # A chunk may end inside a character; the whole output decodes cleanly once the stream is done.
    return b"".join(chunks).decode(errors="replace")


def _reader(stream: IO[bytes], sink: list[bytes]) -> threading.Thread:
    def read() -> None:
        # read1 returns what is there as soon as anything is, so a stream's output arrives as it is written.
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            sink.append(chunk)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@contextmanager
def started_server(
    argv: Sequence[str], log_path: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """Starts the server command `argv` in the repository's root; yields it once health says SERVING and
    stops it with SIGTERM at the end, failing if it does not exit 0."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv),
            cwd=REPOSITORY,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        with grpc.insecure_channel(argv[argv.index("--address") + 1]) as channel:
            wait_serving(process, channel, log_path)
        yield process
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=RUN_LIMIT)
        assert returncode == 0, f"the server exited {returncode}:\n{log_path.read_text()}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
