"""Counts, ordinals and articles in messages, spelled right ("1 task", "101st", "an admin").

Messages of the CLI and the server build these with this one helper rather than by hand:
``f"{n} tasks"`` reads "1 tasks", ``f"{n}th"`` reads "101th" and ``f"a {role}"`` reads
"a admin". Plain functions, no imports: the CLI calls them before anything heavy loads.

Example:
    >>> plural(1, "task"), plural(3, "task"), plural(2, "entry", "entries")
    ('1 task', '3 tasks', '2 entries')
    >>> ordinal(1), ordinal(11), ordinal(22), ordinal(101), ordinal(113)
    ('1st', '11th', '22nd', '101st', '113th')
    >>> with_article("admin"), with_article("user"), with_article("node")
    ('an admin', 'a user', 'a node')
"""

from __future__ import annotations

__all__ = ["ordinal", "plural", "with_article"]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and ``word``, in the plural unless ``n`` is 1 (``many`` for irregular ones).

    Example:
        >>> plural(0, "round"), plural(1, "round")
        ('0 rounds', '1 round')
    """
    if n == 1:
        return f"{n} {word}"
    return f"{n} {many if many is not None else word + 's'}"


def ordinal(n: int) -> str:
    """``n`` as an English ordinal: 1st, 2nd, 3rd, 4th, 11th-13th, 21st, 101st, 111th.

    Example:
        >>> [ordinal(i) for i in (2, 3, 4, 12, 23, 102)]
        ['2nd', '3rd', '4th', '12th', '23rd', '102nd']
    """
    teen = 11 <= n % 100 <= 13
    suffix = "th" if teen else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


#: Words that start with a vowel letter but a consonant sound, and the reverse.
_A_BEFORE = ("user", "uni", "url", "uuid", "one", "eu")
_AN_BEFORE = ("hour", "honest", "http", "html", "sql", "ssh", "xml", "mri")


def with_article(word: str) -> str:
    """``word`` with "a" or "an" in front, by its sound ("an admin", "a user", "an HTTP").

    Example:
        >>> with_article("error"), with_article("HTTP error"), with_article("tool")
        ('an error', 'an HTTP error', 'a tool')
    """
    low = word.lower()
    if low.startswith(_A_BEFORE):
        return f"a {word}"
    if low.startswith(_AN_BEFORE) or low[:1] in ("a", "e", "i", "o", "u"):
        return f"an {word}"
    return f"a {word}"
