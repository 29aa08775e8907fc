"""Everything the /ai/ routes need, and the one table of them the plugin registers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node.config import Settings
from node.intake import Intake
from node.web.api import NodeApi
from node.web.routes import RouteTable, merge

GetJson = Callable[[str], Any]


@dataclass
class NodeContext:
    """The node's parts as the plugin builds them, handed to every group of routes."""

    settings: Settings
    intake: Intake
    #: GET on this Orthanc's REST API (in the plugin: orthanc.RestApiGet), decoded JSON
    get_json: GetJson
    health_extra: Callable[[], dict[str, Any]] = field(default=dict)


def build_routes(context: NodeContext) -> RouteTable:
    api = NodeApi(context.intake, context.health_extra)
    return merge(api.routes())
