"""``/api/v1/nodes``: the node listing, and the node agents' WebSocket (served by the hub)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket

from flowfed.node.protocol import WS_PATH
from flowfed.runtime.remote import NodeInfo
from flowfed.server.auth import require_principal
from flowfed.server.deps import AUTH_ERRORS, NOT_FOUND
from flowfed.server.hub import NodeHub
from flowfed.server.node_socket import serve_node
from flowfed.server.problems import ProblemError
from flowfed.server.schemas import NodeItem, NodeList


def _item(info: NodeInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "online": info.online,
        "last_seen": info.last_seen,
        "datasets": list(info.datasets.values()),
        "running": info.running,
    }


router = APIRouter(
    prefix="/api/v1/nodes",
    tags=["nodes"],
    dependencies=[Depends(require_principal)],
    responses=AUTH_ERRORS,
)


def _hub(ws_or_request: Any) -> NodeHub:
    hub: NodeHub = ws_or_request.app.state.hub
    return hub


@router.get("", response_model=NodeList)
def list_nodes_route(request: Request) -> dict[str, Any]:
    """Every node: online or offline, last seen, datasets (schema and hash), running tasks."""
    hub = _hub(request)
    hub.sync()
    nodes = hub.nodes()
    return {"items": [_item(nodes[k]) for k in sorted(nodes)]}


@router.get("/{name}", response_model=NodeItem, responses=NOT_FOUND)
def show_node_route(name: str, request: Request) -> dict[str, Any]:
    """One node (404 if no node has this name)."""
    hub = _hub(request)
    hub.sync()
    info = hub.nodes().get(name)
    if info is None:
        raise ProblemError(404, f"no node named '{name}'", kind="not-found")
    return _item(info)


ws_router = APIRouter()


@ws_router.websocket(WS_PATH)
async def node_socket(websocket: WebSocket) -> None:
    """A node agent's connection (authenticated by its node token in the upgrade)."""
    await serve_node(_hub(websocket), websocket)
