"""Errors users can act on: each names the file, line, step and field it is about.

Every build-time check (parsing, schema, planning) produces :class:`Diagnostic` values and
raises them together in one :class:`FlowError`, so a user fixes a flow in one pass instead
of one error per run.

Example:
    >>> d = Diagnostic("unknown tool 'clen'", file="flow.yaml", line=7, step="clean", field="tool")
    >>> str(d)
    "flow.yaml:7: step 'clean', field 'tool': unknown tool 'clen'"
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in a flow definition, with where it is."""

    message: str
    file: str | None = None
    line: int | None = None
    step: str | None = None
    field: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        elif self.line:
            where = f"line {self.line}: "
        parts = []
        if self.step:
            parts.append(f"step '{self.step}'")
        if self.field:
            parts.append(f"field '{self.field}'")
        subject = ", ".join(parts)
        text = f"{where}{subject + ': ' if subject else ''}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for ``--json`` output and the API's problem details."""
        return {k: v for k, v in asdict(self).items() if v is not None}


class FlowError(Exception):
    """A flow that cannot run, with every problem found (never just the first)."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))
