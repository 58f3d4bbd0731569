"""README.md's fenced code blocks, each with its marker comment, and a shell block cut into its commands.

A block may be preceded (on the last non-blank line before its fence) by a marker comment that the test of
the README reads: `<!-- readme-test: skip: REASON -->` (not run; the reason is required and shows in the
README's source) or `<!-- readme-test: filters: REASON -->` (each line is a filter expression, sent to the
list RPCs). Any other `readme-test` marker is an error, so a typo cannot silently skip a block.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

__all__ = ["DIRECTIVES", "Block", "ReadmeError", "ShellCommand", "parse_blocks", "shell_commands"]

DIRECTIVES = ("skip", "filters")

_FENCE = re.compile(r"^ {0,3}```(?P<info>[^`]*)$")
_HEADING = re.compile(r"^#{1,6} +(?P<title>.+?) *$")
_MARKER = re.compile(r"^<!--\s*readme-test:\s*(?P<directive>[a-z-]+)\s*(?::(?P<reason>.*?))?\s*-->$")
_ANY_MARKER = re.compile(r"readme-test")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class ReadmeError(ValueError):
    """README.md is not in the shape its test reads: an unclosed fence, a bad marker, a broken command."""


@dataclass(frozen=True)
class Block:
    """One fenced block: its info string's first word ("sh", "python", "" ...), its text and where it is."""

    language: str
    text: str
    # The 1-based line of the opening fence.
    line: int
    # The nearest heading above the block.
    heading: str
    # The marker's directive ("skip", "filters") and its reason; "" without a marker.
    directive: str = ""
    reason: str = ""

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.heading})"


@dataclass(frozen=True)
class ShellCommand:
    """One command of a shell block: its text (continuation lines included) and the comment above it."""

    text: str
    # The 1-based README line the command starts on.
    line: int
    # The comment lines directly above the command, without their "#".
    comment: str

    @property
    def is_assignment(self) -> bool:
        """A plain variable assignment (`G="..."`), which prints nothing."""
        words = shlex.split(self.text, comments=True)
        return len(words) == 1 and bool(_ASSIGNMENT.match(words[0]))

    @property
    def streams(self) -> bool:
        """The README marks it as running until interrupted: "(Ctrl-C to stop)" in its comment."""
        return "(Ctrl-C to stop)" in self.comment


def parse_blocks(text: str) -> list[Block]:
    """Every fenced block of `text`, in order; ReadmeError for an unclosed fence or a malformed marker."""
    lines = text.splitlines()
    blocks: list[Block] = []
    heading = "top"
    index = 0
    while index < len(lines):
        line = lines[index]
        title = _HEADING.match(line)
        if title:
            heading = title.group("title")
        fence = _FENCE.match(line)
        if not fence:
            index += 1
            continue
        start = index
        directive, reason = _marker(lines, start)
        index += 1
        while index < len(lines) and not _FENCE.match(lines[index]):
            index += 1
        if index == len(lines):
            raise ReadmeError(f"README.md:{start + 1}: a fenced block is never closed")
        info = fence.group("info").strip()
        blocks.append(
            Block(
                language=info.split()[0] if info else "",
                text="\n".join(lines[start + 1 : index]) + "\n",
                line=start + 1,
                heading=heading,
                directive=directive,
                reason=reason,
            )
        )
        index += 1
    return blocks


def _marker(lines: list[str], fence_index: int) -> tuple[str, str]:
    previous = fence_index - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    if previous < 0 or not _ANY_MARKER.search(lines[previous]):
        return "", ""
    where = f"README.md:{previous + 1}"
    marker = _MARKER.match(lines[previous].strip())
    if marker is None:
        raise ReadmeError(f"{where}: a readme-test marker must read <!-- readme-test: DIRECTIVE: REASON -->")
    directive = marker.group("directive")
    reason = (marker.group("reason") or "").strip()
    if directive not in DIRECTIVES:
        raise ReadmeError(f"{where}: unknown readme-test directive {directive!r} (one of {DIRECTIVES})")
    if not reason:
        raise ReadmeError(f"{where}: a readme-test marker needs a reason after its directive")
    return directive, reason


def shell_commands(block: Block) -> list[ShellCommand]:
    """The commands of a shell block, in order.

    A command runs on over lines that end with a backslash or sit inside an open quote; comment lines and
    blank lines are not commands, but the comment lines directly above a command travel with it.
    """
    commands: list[ShellCommand] = []
    comment: list[str] = []
    pending: list[str] = []
    start = 0
    for offset, line in enumerate(block.text.splitlines()):
        number = block.line + 1 + offset
        if not pending:
            stripped = line.strip()
            if not stripped:
                comment = []
                continue
            if stripped.startswith("#"):
                comment.append(stripped.lstrip("#").strip())
                continue
            start = number
        pending.append(line)
        text = "\n".join(pending)
        if line.endswith("\\") or not _complete(text):
            continue
        commands.append(ShellCommand(text=text, line=start, comment=" ".join(comment)))
        pending = []
        comment = []
    if pending:
        raise ReadmeError(f"README.md:{start}: a command is not complete by the end of its block")
    return commands


def _complete(text: str) -> bool:
    """Whether every quote of `text` is closed."""
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True
