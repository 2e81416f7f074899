"""The `vpcnet` executable: `vpcnet agent ...` starts the agent without importing typer and the command
modules (a node runs the agent far more often than anything else, and typer plus rich cost it start-up time
and resident memory); every other command, and `vpcnet agent --help`, goes to the full CLI (main)."""

from __future__ import annotations

import argparse
import sys

from vpcnet.cli.agent_run import OPTION_ENV, run_agent_with


def _agent_options(argv: list[str]) -> dict[str, str | None] | None:
    """The agent's option values, or None when argv is not a plain agent command the light path handles."""
    parser = argparse.ArgumentParser(prog="vpcnet agent", add_help=False, allow_abbrev=False)
    for option in OPTION_ENV:
        parser.add_argument("--" + option.replace("_", "-"), dest=option, default=None)
    try:
        known, rest = parser.parse_known_args(argv)
    except SystemExit:  # an option without its value: the full CLI says what is wrong
        return None
    if rest:
        return None
    return vars(known)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["agent"]:
        options = _agent_options(args[1:])
        if options is not None:
            sys.exit(run_agent_with(options))
    from vpcnet.cli.main import main as full_cli

    sys.argv = [sys.argv[0], *args]
    full_cli()


if __name__ == "__main__":
    main()
