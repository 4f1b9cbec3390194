"""`rscovlm`: the headless command line. Each command group lives in its own module and adds
its subcommands through `register(subparsers)`; this module owns error handling.

Bad input ends with one line on stderr naming the problem and the fix, exit status 2, and no
traceback; nothing is written.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from backend import __version__
from backend.errors import Cancelled, UserError

# Command groups, imported in this order; a group whose package is absent is left out.
COMMAND_MODULES = ("backend.cli.tasks", "backend.cli.serve", "backend.cli.models", "backend.cli.evaluate", "training.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rscovlm",
        description="Ask RSCoVLM about a raster; answers come back as georeferenced features.",
    )
    parser.add_argument("--version", action="version", version=f"rscovlm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"rscovlm: error: {exc}", file=sys.stderr)
        return 2
    except Cancelled as exc:
        print(f"rscovlm: cancelled: {exc}; nothing was written.", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("rscovlm: interrupted; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
