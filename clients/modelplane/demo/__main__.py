"""`python -m modelplane.demo` (`make demo`): the whole story, printed as a timeline; exit 0 only when every
step happened as told."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelplane.demo.story import main


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelplane.demo", description=__doc__)
    parser.add_argument(
        "--database-url",
        help="a Postgres for the server (the database is created if missing); default: an embedded Postgres",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        help="where the processes' logs (and the embedded Postgres) go; default: a temporary one",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        choices=range(1, 5),
        default=1,
        help="server replicas on the one database, each with its step driver (default 1)",
    )
    args = parser.parse_args(argv)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    return main(sys.stdout, database_url=args.database_url, directory=args.dir, replicas=args.replicas)


if __name__ == "__main__":
    sys.exit(cli())
