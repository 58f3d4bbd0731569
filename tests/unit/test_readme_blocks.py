"""The README reader: fenced blocks with their markers, and shell blocks cut into commands."""

from __future__ import annotations

import pytest

from tests.support.readme_blocks import ReadmeError, parse_blocks, shell_commands

README = """# Title

## Install

<!-- readme-test: skip: starts a server that never ends -->
```sh
make run
```

Text.

```python
print("hi")
```

## Plain

```
a = 1
```
"""


def test_blocks_carry_language_line_heading_and_marker() -> None:
    blocks = parse_blocks(README)
    assert [(b.language, b.line, b.heading, b.directive) for b in blocks] == [
        ("sh", 6, "Install", "skip"),
        ("python", 12, "Install", ""),
        ("", 18, "Plain", ""),
    ]
    assert blocks[0].reason == "starts a server that never ends"
    assert blocks[0].text == "make run\n"
    assert blocks[1].where == "README.md:12 (Install)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("```sh\nls\n", "never closed"),
        ("<!-- readme-test: skipp: because reasons -->\n```sh\nls\n```\n", "unknown readme-test directive"),
        ("<!-- readme-test: skip -->\n```sh\nls\n```\n", "needs a reason"),
        ("<!-- readme-test skip because -->\n```sh\nls\n```\n", "must read"),
    ],
)
def test_malformed_readmes_are_refused(text: str, message: str) -> None:
    with pytest.raises(ReadmeError, match=message):
        parse_blocks(text)


def test_a_marker_applies_only_to_the_block_right_after_it() -> None:
    text = "<!-- readme-test: skip: not this one, see below -->\n\nprose\n\n```sh\nls\n```\n"
    (block,) = parse_blocks(text)
    assert block.directive == ""


def test_shell_commands_span_continuations_and_open_quotes() -> None:
    text = """```sh
G="grpcurl -plaintext"
# Two lines joined by a backslash.
$G -d '{}' \\
  host list

# A quote open across lines, then a stream (Ctrl-C to stop).
$G -d '{"a":
  1}' host Watch
echo done   # a trailing comment
```
"""
    (block,) = parse_blocks(text)
    commands = shell_commands(block)
    assert [c.text for c in commands] == [
        'G="grpcurl -plaintext"',
        "$G -d '{}' \\\n  host list",
        "$G -d '{\"a\":\n  1}' host Watch",
        "echo done   # a trailing comment",
    ]
    assert [c.line for c in commands] == [2, 4, 8, 10]
    assert [c.is_assignment for c in commands] == [True, False, False, False]
    assert [c.streams for c in commands] == [False, False, True, False]
    assert commands[1].comment == "Two lines joined by a backslash."


def test_a_command_left_open_at_the_end_of_its_block_is_refused() -> None:
    (block,) = parse_blocks("```sh\necho 'never closed\n```\n")
    with pytest.raises(ReadmeError, match="not complete"):
        shell_commands(block)
