"""Errors a user can act on.

A `UserError` carries one line that names the problem and the fix; the CLI prints it without a
traceback and exits with status 2, the server answers it as a 4xx with the same text.
"""


class UserError(Exception):
    """Bad input: a missing file, an extent outside the raster, an unusable model folder..."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {fix}" if fix else problem)


class Cancelled(Exception):
    """The caller asked to stop; raised between batches so no partial output is written."""


def validation_problem(errors: list[dict]) -> str:
    """One line from pydantic's error list: where the first problem is and what it is."""
    if not errors:
        return "invalid input."
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("__root__", "body"))
    message = str(first.get("msg", "")).removeprefix("Value error, ").rstrip(".")
    return f"invalid input{f' ({where})' if where else ''}: {message}."
