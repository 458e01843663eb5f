"""Secure aggregation, the wire: the JSON form of every message, read with every check.

The protocol can run as separate tasks (the ``flowfed.secagg_*`` tools on the nodes, then
:func:`~flowfed.fl.secagg.secure_fedavg` on the server), so each message has a JSON form:
:class:`MaskedUpdate` (phase 3, node to server), :class:`RevealedSeeds` (phase 5, a
survivor's seeds with the dropped nodes) and the roster of public keys
(:func:`encode_roster`, :func:`decode_roster`). The readers check every field, the format
tag and the lengths, and name the node at fault. The client's stored secret is read
with the same helpers (:func:`read_payload`, :func:`payload_field`, :func:`from_b64`).

A room of its own because a malformed payload must fail here, loudly, before any
arithmetic: neither the masking nor the unmasking side then has to doubt its input.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowfed.fl.secagg_keys import KEY_BYTES, SEED_BYTES, SecAggError

__all__ = [
    "MASKED_FORMAT",
    "SECRET_FORMAT",
    "SEEDS_FORMAT",
    "MaskedUpdate",
    "RevealedSeeds",
    "decode_roster",
    "encode_roster",
    "from_b64",
    "payload_field",
    "payload_sender",
    "read_payload",
    "to_b64",
]

# The "format" tag of each JSON payload: a reader refuses any other, so a payload of a
# future, incompatible layout fails loudly instead of decoding into a wrong sum.
MASKED_FORMAT = "flowfed.secagg.masked/1"
SECRET_FORMAT = "flowfed.secagg.secret/1"
SEEDS_FORMAT = "flowfed.secagg.seeds/1"


@dataclass(frozen=True)
class MaskedUpdate:
    """What a node sends the server: its masked, fixed-point-encoded vector and metadata.

    ``data`` is one flat ``uint64`` vector (all tensors, then the example count when
    ``weighted``), indistinguishable from random without the pair seeds.
    """

    node: str
    round: int
    participants: frozenset[str]
    shapes: tuple[tuple[int, ...], ...]
    weighted: bool
    frac_bits: int
    data: np.ndarray

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: the metadata as plain values, ``data`` as base64 text of the
        vector's little-endian ``uint64`` bytes (the format is in docs/federated.md).

        >>> from flowfed.fl.secagg import SecAggClient
        >>> a, b = SecAggClient("a", round=1), SecAggClient("b", round=1)
        >>> roster = {"a": a.public_key(), "b": b.public_key()}
        >>> payload = a.mask([np.zeros(2)], roster).to_json()
        >>> sorted(payload)
        ['data', 'format', 'frac_bits', 'node', 'participants', 'round', 'shapes', 'weighted']
        >>> MaskedUpdate.from_json(payload).shapes
        ((2,),)
        """
        return {
            "format": MASKED_FORMAT,
            "node": self.node,
            "round": self.round,
            "participants": sorted(self.participants),
            "shapes": [list(shape) for shape in self.shapes],
            "weighted": self.weighted,
            "frac_bits": self.frac_bits,
            "data": to_b64(np.asarray(self.data, dtype="<u8").tobytes()),
        }

    @classmethod
    def from_json(cls, payload: Any, *, sender: str | None = None) -> MaskedUpdate:
        """Read a payload written by :meth:`to_json`, checking every field.

        ``sender`` is the node the payload is filed under (it names the culprit when the
        payload is too broken to say who wrote it). The vector's length must match the
        shapes: a truncated or padded vector is refused here, not summed into garbage.
        """
        who = payload_sender(payload, sender)
        d = read_payload(payload, MASKED_FORMAT, who)
        node = payload_field(d, "node", str, who)
        rnd = payload_field(d, "round", int, who)
        participants = payload_field(d, "participants", list, who)
        if not all(isinstance(p, str) for p in participants):
            raise SecAggError(f"{who}: 'participants' must be a list of node names")
        raw_shapes = payload_field(d, "shapes", list, who)
        try:
            shapes = tuple(tuple(int(n) for n in shape) for shape in raw_shapes)
        except (TypeError, ValueError):
            raise SecAggError(f"{who}: 'shapes' must be a list of lists of integers") from None
        if any(n < 0 for shape in shapes for n in shape):
            raise SecAggError(f"{who}: 'shapes' holds a negative dimension")
        weighted = payload_field(d, "weighted", bool, who)
        frac_bits = payload_field(d, "frac_bits", int, who)
        raw = from_b64(payload_field(d, "data", str, who), f"{who}: 'data'")
        if len(raw) % 8:
            raise SecAggError(f"{who}: 'data' is {len(raw)} bytes, not a whole number of uint64")
        data = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
        expected = sum(int(np.prod(shape, dtype=np.int64)) for shape in shapes) + int(weighted)
        if data.size != expected:
            raise SecAggError(
                f"{who}: 'data' holds {data.size} values but the shapes {list(shapes)} "
                f"{'plus the example count ' if weighted else ''}need {expected}"
            )
        return cls(
            node=node,
            round=rnd,
            participants=frozenset(participants),
            shapes=shapes,
            weighted=weighted,
            frac_bits=frac_bits,
            data=data,
        )


@dataclass(frozen=True)
class RevealedSeeds:
    """What a surviving node sends after a dropout: its pair seed with each dropped node.

    >>> r = RevealedSeeds("a", 2, {"c": bytes(32)})
    >>> RevealedSeeds.from_json(r.to_json()) == r
    True
    """

    node: str
    round: int
    seeds: dict[str, bytes]

    def to_json(self) -> dict[str, Any]:
        """``{"format", "node", "round", "seeds": {dropped_node: base64 seed}}``."""
        return {
            "format": SEEDS_FORMAT,
            "node": self.node,
            "round": self.round,
            "seeds": {d: to_b64(seed) for d, seed in sorted(self.seeds.items())},
        }

    @classmethod
    def from_json(cls, payload: Any, *, sender: str | None = None) -> RevealedSeeds:
        """Read a payload written by :meth:`to_json`; every seed must be 32 bytes."""
        who = payload_sender(payload, sender)
        d = read_payload(payload, SEEDS_FORMAT, who)
        seeds = payload_field(d, "seeds", dict, who)
        decoded = {
            str(dropped): from_b64(text, f"{who}: the seed for {dropped!r}", SEED_BYTES)
            for dropped, text in seeds.items()
        }
        return cls(payload_field(d, "node", str, who), payload_field(d, "round", int, who), decoded)


def encode_roster(roster: Mapping[str, bytes]) -> dict[str, str]:
    """``{node: raw public key}`` as JSON-able ``{node: base64}`` (what the tools exchange)."""
    return {node: to_b64(key) for node, key in sorted(roster.items())}


def decode_roster(roster: Mapping[str, Any]) -> dict[str, bytes]:
    """``{node: base64 public key}`` back to raw 32-byte keys (what :meth:`SecAggClient.mask`
    takes as ``peers``).

    >>> from flowfed.fl.secagg import SecAggClient
    >>> c = SecAggClient("a", round=1)
    >>> decode_roster(encode_roster({"a": c.public_key()}))["a"] == c.public_key()
    True
    """
    if not isinstance(roster, Mapping):
        raise SecAggError(f"the roster must map node names to public keys, got {type(roster)}")
    return {
        str(node): from_b64(key, f"roster entry {node!r}", KEY_BYTES)
        for node, key in roster.items()
    }


def to_b64(raw: bytes) -> str:
    """``raw`` as base64 text, as every binary field of a payload travels.

    >>> to_b64(b"seed")
    'c2VlZA=='
    """
    return base64.b64encode(raw).decode("ascii")


def from_b64(text: Any, what: str, length: int | None = None) -> bytes:
    """Decode base64 ``text``; ``length``, when given, is the exact byte count required.

    ``what`` names the field in the :class:`SecAggError` raised for anything else.

    >>> from_b64("c2VlZA==", "a seed")
    b'seed'
    """
    if not isinstance(text, str):
        raise SecAggError(f"{what} must be base64 text, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SecAggError(f"{what} is not valid base64") from None
    if length is not None and len(raw) != length:
        raise SecAggError(f"{what} is {len(raw)} bytes, not {length}")
    return raw


def payload_sender(payload: Any, sender: str | None) -> str:
    """Who wrote ``payload``, for error messages: ``sender`` (the node it is filed under)
    if known, else the payload's own ``node`` field, else a generic description.

    >>> payload_sender({"node": "a"}, None), payload_sender(None, "b")
    ("node 'a'", "node 'b'")
    """
    if sender is not None:
        return f"node {sender!r}"
    node = payload.get("node") if isinstance(payload, Mapping) else None
    return f"node {node!r}" if isinstance(node, str) else "a secure-aggregation payload"


def read_payload(payload: Any, fmt: str, who: str) -> Mapping[str, Any]:
    """``payload`` itself, once it is a JSON object tagged with format ``fmt``; else a
    :class:`SecAggError` naming ``who``."""
    if not isinstance(payload, Mapping):
        raise SecAggError(f"{who}: expected a JSON object, got {type(payload).__name__}")
    found = payload.get("format")
    if found != fmt:
        raise SecAggError(f"{who}: expected a {fmt!r} payload, found format {found!r}")
    return payload


def payload_field(d: Mapping[str, Any], key: str, kind: type, who: str) -> Any:
    """``d[key]``, required and of type ``kind`` (``bool`` is not accepted as ``int``).

    >>> payload_field({"round": 3}, "round", int, "node 'a'")
    3
    """
    if key not in d:
        raise SecAggError(f"{who}: the payload has no {key!r}")
    value = d[key]
    # bool is an int subclass: a round of True is a bug, not round 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SecAggError(
            f"{who}: {key!r} must be {kind.__name__}, got {type(value).__name__} {value!r:.40}"
        )
    return value
