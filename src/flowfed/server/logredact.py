"""Keep credentials out of every log line a server process writes.

Browsers cannot set headers on a WebSocket, so the event stream accepts
``?access_token=...``, and uvicorn writes the full path with its query string to the
access log (``"GET /api/v1/runs/x/events?access_token=ffu_..."``) and to its error log
(``"WebSocket /...?access_token=..." [accepted]``). A log file is read by more people than
the token's owner, and kept longer than a token lives.

:class:`RedactSecrets` is a :class:`logging.Filter` that rewrites a record in place
(message, arguments, formatted traceback) and never drops one. It replaces:

- the values of query or form parameters named ``*token``, ``*secret``, ``password``,
  ``passwd`` or ``api_key`` (``access_token=[redacted]``);
- ``Bearer ...`` and ``Basic ...`` credentials (an ``Authorization`` header quoted in a
  message);
- JSON members with those names (``"token": "[redacted]"``);
- anything shaped like a flowfed API token (``ffu_<id>.<secret>``) or a JWT, wherever it
  appears.

:func:`install_log_redaction` (called by ``create_app``, so ``flowfed server``, embedded
servers and ``flowfed run``'s local server all have it) wraps the process's log-record
factory, so every record is rewritten when it is made, whichever logger made it and
whichever handlers (uvicorn's, the root's, a host application's) write it: a logger's own
filter would miss the records of its child loggers, and a handler's filter the handlers
added later. Operators with their own logging configuration can also attach the filter to
their handlers: ``{"()": "flowfed.server.logredact.RedactSecrets"}`` in a ``dictConfig``.

Example:
    >>> redact('"GET /api/v1/runs/1/events?after=3&access_token=ffu_abc.def HTTP/1.1" 101')
    '"GET /api/v1/runs/1/events?after=3&access_token=[redacted] HTTP/1.1" 101'
    >>> redact("Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2ln")
    'Authorization: Bearer [redacted]'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"

_NAMES = r"[\w.-]*(?:token|secret)|password|passwd|api[_-]?key"
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # name=value in a query string, a form body or free text.
    (re.compile(rf"(?i)(?<![\w.-])({_NAMES})=[^&\s\"'#,;)]+"), rf"\1={REDACTED}"),
    # "name": "value" in JSON (or 'name': 'value' in a Python repr).
    (
        re.compile(rf"(?i)([\"']({_NAMES})[\"']\s*:\s*[\"'])[^\"']*"),
        rf"\1{REDACTED}",
    ),
    # An Authorization header's credentials.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    # Credentials that name themselves, wherever they stand.
    (re.compile(r"ffu_[0-9a-f]{32}\.[A-Za-z0-9_-]+"), f"ffu_{REDACTED}"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
)
# A cheap first look: a line without any of these has nothing to redact.
_SUSPECT = re.compile(r"(?i)token|secret|passw|api.?key|bearer|basic|ffu_|eyJ")


def redact(text: str) -> str:
    """``text`` with every credential it holds replaced by ``[redacted]``."""
    if not _SUSPECT.search(text):
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def _redact_arg(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float | bytes):
        return value  # numbers keep their type: formats such as %d need it
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


def redact_record(record: logging.LogRecord) -> None:
    """Rewrite ``record`` in place: its message, arguments and traceback text."""
    if getattr(record, "_flowfed_redacted", False):
        return
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(_redact_arg(a) for a in args)
    elif isinstance(args, Mapping):
        record.args = {k: _redact_arg(v) for k, v in args.items()}
    if record.exc_info and not record.exc_text:
        # Formatted now, redacted, and kept: formatters reuse exc_text when it is set.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._flowfed_redacted = True


class RedactSecrets(logging.Filter):
    """A logging filter that redacts credentials from every record it sees (and keeps it).

    Example:
        >>> rec = logging.LogRecord("uvicorn.access", 20, "", 0, '%s "%s %s"', (
        ...     "127.0.0.1:5", "GET", "/x?token=abc"), None)
        >>> RedactSecrets().filter(rec), rec.getMessage()
        (True, '127.0.0.1:5 "GET /x?token=[redacted]"')
    """

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install_log_redaction() -> None:
    """Redact credentials from every log record this process makes (idempotent).

    Wraps the log-record factory (see the module docstring for why not only a filter),
    and also puts :class:`RedactSecrets` on uvicorn's loggers, so their records are
    clean even if something later replaces the factory.
    """
    current = logging.getLogRecordFactory()
    if not getattr(current, "_flowfed_redacts", False):

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = current(*args, **kwargs)
            redact_record(record)
            return record

        factory._flowfed_redacts = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
