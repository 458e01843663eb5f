"""How a task fails on a node: :class:`TaskFailure`, raised by every stage of a task.

Admission, input loading, the tool call and the egress checks each end a task with a
:class:`TaskFailure`; the agent turns it into the error report that may leave the node
(:func:`flowfed.node.task_reports.error_report`). A room of its own so that each of those
stages can raise it without importing the agent.

Example:
    >>> f = TaskFailure("cancelled", "Cancelled", public=True)
    >>> f.etype, f.public, str(f)
    ('Cancelled', True, 'cancelled')
"""

from __future__ import annotations


class TaskFailure(Exception):
    """A task ended in Error on this node; ``etype`` says how (shown to the user)."""

    def __init__(
        self, message: str, etype: str, tb: str | None = None, *, public: bool = False
    ) -> None:
        super().__init__(message)
        self.etype = etype
        self.tb = tb
        #: The node wrote the message itself (a refusal, a timeout): it may leave as is.
        #: Anything else (what the tool raised or printed) stays on the node by default.
        self.public = public
