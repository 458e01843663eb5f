"""Whether what one step produces fits what the next one takes, from their annotations.

The planner compares, for every artifact edge, the producer's return annotation (or the
annotation of the named output) with the consumer's parameter annotation, so a
``DataFrame`` wired into a ``list`` input is a build-time error rather than a
``TypeError`` at 3 AM. Pure: no I/O, only ``typing`` introspection.

The rules (:func:`fits`):

- ``Any``, a missing annotation, ``object``, a string (an unresolved forward reference), a
  ``TypeVar`` or ``Literal`` on either side: not checked.
- ``Annotated[X, ...]`` is ``X``; ``flowfed.Lazy`` (or ``Lazy | None``) on the consumer
  takes any artifact (the tool receives a handle).
- Unions: a producer's ``A | B`` fits when each member fits (``None`` included: a
  producer that may return ``None`` does not fit a consumer that cannot take it); a
  consumer's ``A | B`` / ``Optional[A]`` takes what fits one member.
- Classes follow ``issubclass``, generics by their origin (``list[int]`` fits
  ``Sequence``; item types are not compared); ``int`` fits ``float`` and ``complex``,
  ``float`` fits ``complex`` (PEP 484's numeric tower).
- ``flowfed.Model``: a subclass fits its bases; a producer declaring a more general model
  class than the consumer wants (``Model`` into ``LogisticRegressionModel``) is not
  checked, since which model comes out is known only when it runs.

Example:
    >>> from typing import Optional, Sequence
    >>> fits(list[int], Sequence), fits(dict, list), fits(int, Optional[float])
    (True, False, True)
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

__all__ = ["describe", "fits", "fits_list_of", "returned_type_problem"]


def fits(produced: Any, expected: Any) -> bool:
    """Whether a value of type ``produced`` is acceptable where ``expected`` is declared
    (True when either side is not checkable; see the module docstring)."""
    produced, expected = _plain(produced), _plain(expected)
    if _unchecked(produced) or _unchecked(expected) or _is_lazy(expected):
        return True
    e_members = _union_members(expected)
    if e_members is not None and (_unchecked_any(e_members) or any(_is_lazy(m) for m in e_members)):
        return True
    p_members = _union_members(produced)
    if p_members is not None:
        return all(fits(m, expected) for m in p_members)
    if e_members is not None:
        return any(fits(produced, m) for m in e_members)
    return _class_fits(produced, expected)


def fits_list_of(produced: Any, expected: Any) -> bool:
    """Whether a list of ``produced`` values fits ``expected`` (a fan-in: a central step
    receiving every placed instance); the item type of ``list[X]`` is compared here."""
    expected = _plain(expected)
    if _unchecked(expected) or _is_lazy(expected):
        return True
    for member in _union_members(expected) or [expected]:
        if _unchecked(member) or _is_lazy(member):
            return True
        if fits(list, member):
            items = typing.get_args(member)
            if not items or fits(produced, items[0]):
                return True
    return False


def describe(annotation: Any) -> str:
    """A short, readable name of an annotation (``DataFrame``, ``list[int] | None``)."""
    annotation = _plain(annotation)
    if annotation is type(None) or annotation is None:
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    members = _union_members(annotation)
    if members is not None:
        return " | ".join(describe(m) for m in members)
    return str(annotation).replace("typing.", "")


def returned_type_problem(tool_type: str, tool: str, values: dict[str, Any]) -> str | None:
    """What a tool of ``tool_type`` returned against its type's rule, or None when it fits.

    The planner checks the rules on annotations; this checks the values, which an
    annotation such as ``-> Any`` does not describe: a ``preprocessing`` tool that returns
    a model breaks its rule however it is annotated.
    """
    from flowfed.tools.core import TOOL_TYPE_RULES, ToolType

    kind = ToolType(tool_type)
    models = [name for name, value in values.items() if _is_model_value(value)]
    no_models = (
        ToolType.PREPROCESSING,
        ToolType.DATA_TRANSFORMATION,
        ToolType.SELF_LEARNED,
        ToolType.EVALUATION,
    )
    if kind in no_models and models:
        shown = ", ".join(f"'{n}' ({type(values[n]).__name__})" for n in models)
        article = "an" if str(kind)[:1] in "aeiou" else "a"
        return (
            f"tool '{tool}' is of type '{kind}' but returned a model as output {shown}; "
            f"{article} {kind} tool {TOOL_TYPE_RULES[kind]}"
        )
    if kind is ToolType.ANALYSIS and values and not models:
        return (
            f"tool '{tool}' is of type 'analysis' but returned no model (outputs: "
            + ", ".join(f"'{n}' ({type(v).__name__})" for n, v in values.items())
            + f"); an analysis tool {TOOL_TYPE_RULES[kind]}"
        )
    return None


# --- helpers --------------------------------------------------------------------------------


def _plain(annotation: Any) -> Any:
    """``Annotated[X, ...]`` → ``X``; ``None`` → ``NoneType``; anything else as it is."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if annotation is None:
        return type(None)
    return annotation


def _unchecked(annotation: Any) -> bool:
    return (
        annotation is Any
        or annotation is object
        or annotation is inspect.Parameter.empty
        or isinstance(annotation, str | typing.TypeVar | typing.ForwardRef)
        or typing.get_origin(annotation) is typing.Literal
    )


def _unchecked_any(members: list[Any]) -> bool:
    return any(_unchecked(m) for m in members)


def _is_lazy(annotation: Any) -> bool:
    return getattr(annotation, "__flowfed_lazy__", False) is True


def _union_members(annotation: Any) -> list[Any] | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return [_plain(a) for a in typing.get_args(annotation)]
    return None


_NUMERIC = {(int, float), (int, complex), (float, complex)}


def _class_fits(produced: Any, expected: Any) -> bool:
    p = typing.get_origin(produced) or produced
    e = typing.get_origin(expected) or expected
    if not isinstance(p, type) or not isinstance(e, type):
        return True  # Callable[...], NewType, a special form: not checked
    if (p, e) in _NUMERIC:
        return True
    if typing.is_typeddict(e):
        return issubclass(p, dict)  # a dict may well have the TypedDict's keys
    try:
        if issubclass(p, e):
            return True
    except TypeError:  # a protocol or TypedDict that refuses issubclass: not checked
        return True
    if _is_model_class(p) and _is_model_class(e):
        # A producer declaring a more general model than the consumer wants.
        try:
            return issubclass(e, p)
        except TypeError:
            return True
    return False


def _is_model_class(cls: Any) -> bool:
    return isinstance(cls, type) and bool(getattr(cls, "__flowfed_model__", False))


def _is_model_value(value: Any) -> bool:
    return bool(getattr(type(value), "__flowfed_model__", False))
