"""The README's table of `serve` settings lists exactly the flags `modelplane serve --help` shows, each with
its environment variable and its default, so the two cannot drift apart."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from modelplane.server.cli import SERVE_SETTINGS, build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _serve_parser() -> argparse.ArgumentParser:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            parser: argparse.ArgumentParser = action.choices["serve"]
            return parser
    raise AssertionError("no serve command")


def _table_rows() -> list[list[str]]:
    """The rows (cells) of the first table under "## Running the server"."""
    section = README.read_text().split("\n## Running the server\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert rows, "no table in the README's Running the server section"
    table = []
    for line in rows[2:]:  # past the header and the |---| line
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    return table


def test_every_serve_flag_is_in_the_readme_table_and_nothing_else() -> None:
    shown = {
        option
        for action in _serve_parser()._actions
        for option in action.option_strings
        if option not in ("-h", "--help")
    }
    listed = {flag for cells in _table_rows() for flag in re.findall(r"--[a-z][a-z-]*", cells[0])}
    assert listed == shown


def test_each_flag_row_names_its_variable_and_default() -> None:
    rows = {flag: cells for cells in _table_rows() for flag in re.findall(r"--[a-z][a-z-]*", cells[0])}
    for setting in SERVE_SETTINGS:
        _, environment, default = rows[setting.flag]
        assert setting.env in environment, setting.flag
        if setting.default is not None and not setting.switch:
            shown = f"{setting.default:g}" if isinstance(setting.default, float) else str(setting.default)
            assert f"`{shown}`" in default, (setting.flag, default)
