"""How a `diffaccel` command ends on bad input or an interrupt: one line on stderr and an
exit status. Here, at the bottom of the import order, because the commands live in
three layers (`sweep.driver`, `codegen.commands`/`query`/`report`, `diffaccel`).

Exit statuses: 2 bad input (nothing was run or written), 1 a failure while running,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import typer

BAD_INPUT = 2
INTERRUPTED = 130
INTERRUPTED_TEXT = "\ninterrupted: finished trials are in the lake; rerun the same command to resume"
TERMINATED = 143
TERMINATED_TEXT = ("terminated (SIGTERM): finished trials are in the lake and its lease is released; "
                   "rerun the same command to resume")


def fail(message: str, code: int = BAD_INPUT) -> typer.Exit:
    """Print ``error: <message>`` to stderr and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=code)


def interrupted() -> typer.Exit:
    """Say that a sweep was interrupted and how to resume it; the exit to raise."""
    typer.echo(INTERRUPTED_TEXT, err=True)
    return typer.Exit(code=INTERRUPTED)


def terminated() -> typer.Exit:
    """Say that a sweep was terminated (SIGTERM) and how to resume it; the exit to raise."""
    typer.echo(TERMINATED_TEXT, err=True)
    return typer.Exit(code=TERMINATED)


__all__ = ["BAD_INPUT", "INTERRUPTED", "INTERRUPTED_TEXT", "TERMINATED", "TERMINATED_TEXT", "fail", "interrupted",
           "terminated"]
