"""Everything the /ai/ routes need, and the one table of them the plugin registers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from node.config import Settings
from node.db.intake_problems import IntakeProblemStore
from node.delivery.queue import DeliveryStore
from node.intake.handoff import Intake
from node.web.access import AccessPolicy, access_routes
from node.web.api import NodeApi
from node.web.console import console_routes
from node.web.dashboard_api import DashboardApi
from node.web.destinations_api import DestinationsApi
from node.web.http import ApiResponse, Request
from node.web.intake_api import IntakeApi
from node.web.openapi import build_openapi
from node.web.operations_api import OperationsApi
from node.web.routes import Operation, Route, RouteTable, merge
from node.web.rules_api import RulesApi
from node.web.tester import RuleTester

GetJson = Callable[[str], Any]


@dataclass
class NodeContext:
    """The node's parts as the plugin builds them, handed to every group of routes.

    Stores left as None are built over the job store's engine, so the plugin only has to pass
    what it alone has (Orthanc's REST API)."""

    settings: Settings
    intake: Intake
    #: GET on this Orthanc's REST API (in the plugin: orthanc.RestApiGet), decoded JSON
    get_json: GetJson
    health_extra: Callable[[], dict[str, Any]] = field(default=dict)
    deliveries: DeliveryStore | None = None
    #: the plugin's access filter, which GET /ai/me asks who the caller is; None without
    #: authentication (or outside the plugin): /ai/me then answers the anonymous admin
    access: AccessPolicy | None = None


def build_routes(context: NodeContext) -> RouteTable:
    engine = context.intake.store.engine
    # the intake's stores: the rules it routes by are the ones these routes change
    config = context.intake.config
    deliveries = context.deliveries or DeliveryStore(engine)
    waiting = context.intake.waits.count_waiting
    registry = context.intake.registry

    operations = OperationsApi(context.intake.store, deliveries, config)
    rules = RulesApi(config, registry)
    node_api = NodeApi(context.intake, context.health_extra, deliveries)
    groups: list[Iterable[Route]] = [
        node_api.routes(),
        node_api.studies_routes(),
        operations.routes(),
        rules.routes(),
        RuleTester(rules, config, registry, context.intake.summarize).routes(),
        DestinationsApi(config, context.get_json).routes(),
        DashboardApi(context.intake.store, deliveries, waiting).routes(),
        IntakeApi(IntakeProblemStore(engine), config).routes(),
        console_routes(),
        # here, not merged in by the plugin afterwards, so that openapi.json describes it too
        access_routes(context.access),
    ]
    document: dict[str, Any] = {}

    def openapi(request: Request) -> ApiResponse:
        # built on first use: the table it describes includes this very route
        if not document:
            document.update(build_openapi(table))
        return ApiResponse(200, document)

    described = Route(
        "/ai/openapi.json",
        (
            Operation(
                "GET",
                openapi,
                "This document: the OpenAPI 3.1 description of every /ai/ route",
                response_schema={"type": "object"},
            ),
        ),
    )
    table = merge(*(list(group) for group in groups), [described])
    return table
