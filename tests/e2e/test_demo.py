"""`make demo`'s entry point, `python -m modelplane.demo`, run whole as a process on the test Postgres: the
server and the three consumer services as processes, both canary runs decided by their gates, the gates'
figures equal to AggregateLogEvents'. The demo asserts every step itself and exits 0 only when all happened;
this test holds it to that, and to the lines the README quotes. Across two replicas on one database (the
story and the services talking to different ones, both step drivers racing), each decision is in the
history once."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import environment
from tests.support.readme_blocks import parse_blocks

# Bounds the run so a hang fails the test; not a performance expectation.
DEMO_LIMIT = 300.0
ROOT = Path(__file__).resolve().parents[2]
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]\d+)?")


def readme_excerpt() -> list[str]:
    """The output lines the README quotes under `make demo` (its comments after "An excerpt")."""
    [block] = [
        block
        for block in parse_blocks((ROOT / "README.md").read_text())
        if block.heading == "The whole story: `make demo`"
    ]
    comments = [line.removeprefix("#") for line in block.text.splitlines() if line.startswith("#")]
    assert comments[0].strip().startswith("An excerpt"), comments[0]
    return [line.strip() for line in comments[1:] if line.strip()]


def pattern(quoted: str) -> re.Pattern[str]:
    """A quoted line as a pattern: its words as they are, any figure for its figures, any text for "…",
    any run of spaces for a run of spaces (tables are as wide as their widest cell)."""
    parts = []
    for piece in re.split(r"(…|\s+|\d+(?:\.\d+)?(?:e[-+]\d+)?)", quoted):
        if piece == "…":
            parts.append(".*")
        elif piece.isspace():
            parts.append(r"\s+")
        elif _NUMBER.fullmatch(piece):
            parts.append(_NUMBER.pattern)
        else:
            parts.append(re.escape(piece))
    return re.compile(r"^\s*" + "".join(parts) + r"\s*$", re.MULTILINE)


def test_the_makefile_runs_the_demo_module() -> None:
    recipe = re.search(r"^demo:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert recipe is not None, "the Makefile has a demo target"
    assert recipe.group(1) == "$(PY) -m modelplane.demo"


@pytest.mark.timeout(DEMO_LIMIT + 30)
@pytest.mark.parametrize("replicas", [1, 2], ids=["one server", "two replicas"])
def test_the_whole_story_happens_as_told(database_url: str, tmp_path: Path, replicas: int) -> None:
    command = [
        sys.executable,
        "-m",
        "modelplane.demo",
        "--database-url",
        database_url,
        "--dir",
        str(tmp_path),
    ]
    result = subprocess.run(
        [*command, "--replicas", str(replicas)],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=DEMO_LIMIT,
        check=False,
    )
    output = result.stdout
    logs = "\n".join(
        f"--- {path.name}\n{path.read_text()[-3000:]}" for path in sorted(tmp_path.glob("*.log"))
    )
    assert result.returncode == 0, f"{output}\n{result.stderr}\n{logs}"
    assert "FAILED" not in output
    assert "The whole story happened as told" in output
    assert len(re.findall(r"^ *[\d.]+s  server 127\.0\.0\.1:\d+ SERVING$", output, re.MULTILINE)) == replicas
    # Each decision is in the history once, however many step drivers raced for it: run 1 advanced its
    # first step and succeeded, run 2 was rolled back at its first step.
    for decision in ("STEP_ADVANCED", "SUCCEEDED", "ROLLED_BACK"):
        assert len(re.findall(rf"history r\d+ {decision} by modelplane-driver", output)) == 1, output
    # Run 1 succeeded with every gate passing, and the alias moved.
    assert re.search(r"SUCCEEDED by modelplane-driver", output), output
    assert "models/storyteller/aliases/prod -> versions/2" in output
    # Run 2 was rolled back by the gate on the guardrail block rate, with its figures in the history.
    assert re.search(r"ROLLED_BACK by modelplane-driver: .*story-blocks", output), output
    assert re.search(r"gate story-blocks FAIL: canary [\d.]+ \(n=\d+\)", output), output
    # The summary tables.
    assert re.search(r"versions/3\s+ROLLED_BACK\s+story-blocks", output), output
    assert re.search(r"versions/2\s+SUCCEEDED\s+every gate passed", output), output
    assert "AggregateLogEvents of deployments/stories-prod by model version, slot and kind" in output
    # What the README quotes of a run is what a run prints, figures aside.
    # (The README's run used the embedded Postgres, this one the test's: the line naming it differs.)
    as_made = output.replace("(the Postgres of --database-url;", "(embedded Postgres;")
    missing = [line for line in readme_excerpt() if not pattern(line).search(as_made)]
    assert not missing, f"README lines the demo no longer prints: {missing}\n{output}"
