"""Data nodes on the server, by the names they were first published under.

The code lives in rooms of its own, as elsewhere in ``flowfed.server``:

- :mod:`flowfed.server.node_store`: credentials and rows (``add_node``, ``remove_node``,
  ``node_for_token``, ``stored_nodes``);
- :mod:`flowfed.server.hub`: :class:`NodeHub`, the agents' WebSocket end and the engine's
  dispatcher;
- :mod:`flowfed.server.schemas`: the REST shapes (``NodeItem``, ``NodeList``);
- :mod:`flowfed.server.routes.nodes`: ``/api/v1/nodes`` and the agents' WebSocket route.

Example:
    >>> from flowfed.server.nodes import NodeHub, add_node
"""

from __future__ import annotations

from flowfed.server.hub import MISSED_HEARTBEATS, NODE_EVENTS, NodeHub
from flowfed.server.node_store import (
    NODE_TOKEN_PREFIX,
    CreatedNode,
    add_node,
    node_for_token,
    remove_node,
    stored_nodes,
)

__all__ = [
    "MISSED_HEARTBEATS",
    "NODE_EVENTS",
    "NODE_TOKEN_PREFIX",
    "CreatedNode",
    "NodeHub",
    "add_node",
    "node_for_token",
    "remove_node",
    "stored_nodes",
]
