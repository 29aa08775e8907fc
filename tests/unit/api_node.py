"""A node's whole /ai/ route table over a real SQLite job database, for the admin API tests.

Requests go through the table (path matching, parameters) to the handlers, as the plugin sends
them; only Orthanc is replaced, by a fixed study and a /system answer.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import CTImageStorage, SegmentationStorage

from node.config import Settings
from node.db.config_store import ConfigStore
from node.db.database import create_engine_for, migrate
from node.db.jobs import JobStore
from node.db.secrets import SecretBox
from node.delivery.queue import DeliveryStore
from node.errors import OrthancError
from node.intake.handoff import Intake
from node.pipeline.registry import PipelineRegistry
from node.study.series import SeriesSummary
from node.study.summary import StudySeries, StudySummary
from node.web.app import NodeContext, build_routes
from node.web.http import ApiResponse, Request
from node.web.routes import RouteTable

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


def ct_head_study() -> StudySummary:
    """A CT head study in Orthanc: one thin axial series, one thick one, and a SEG the node made."""

    def ct(key: str, uid: str, count: int, thickness: float, description: str) -> StudySeries:
        summary = SeriesSummary(
            series_instance_uid=uid,
            modality="CT",
            instance_count=count,
            image_orientation=AXIAL,
            sop_class_uid=CTImageStorage,
            series_description=description,
            body_part="HEAD",
            slice_thickness_mm=thickness,
        )
        attributes = {
            "Modality": "CT",
            "BodyPartExamined": "HEAD",
            "SliceThickness": thickness,
            "SeriesDescription": description,
            "SeriesInstanceUID": uid,
        }
        return StudySeries(key, summary, "Siemens", attributes)

    seg = StudySeries(
        "series-seg",
        SeriesSummary(f"{STUDY_UID}.9", "SEG", 1, None, SegmentationStorage, "AI SEG ct-tissue"),
        "AI node",
        {"Modality": "SEG"},
    )
    return StudySummary(
        "study-1",
        STUDY_UID,
        (
            ct("series-thin", f"{STUDY_UID}.1", 120, 1.0, "Head 1mm"),
            ct("series-thick", f"{STUDY_UID}.2", 30, 5.0, "Head 5mm"),
            seg,
        ),
        {"StudyInstanceUID": STUDY_UID, "StudyDescription": "CT HEAD"},
    )


@dataclass
class ApiNode:
    table: RouteTable
    jobs: JobStore
    deliveries: DeliveryStore
    config: ConfigStore

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes = b"",
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        user: str = "alice",
    ) -> ApiResponse:
        # as in Orthanc, which gives a callback the query arguments of a GET only
        assert not query or method == "GET", f"{method} {path}: Orthanc would not pass the query {query}"
        found = self.table.find(path)
        assert found is not None, f"no route for {path}"
        route, groups = found
        operation = route.operation(method)
        assert operation is not None, f"no {method} on {route.path}"
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers = {"content-type": "application/json", **(headers or {})}
        request = Request(method, path, groups, query or {}, body, headers or {}, user)
        return operation.handler(request)


def api_node(tmp_path: Path) -> ApiNode:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    migrate(url)
    engine = create_engine_for(url)
    jobs = JobStore(engine)
    studies = {"study-1": ct_head_study()}

    def summarize(study_id: str) -> StudySummary:
        if study_id not in studies:
            raise OrthancError(f"Orthanc could not answer GET /studies/{study_id}: 404")
        return studies[study_id]

    def get_json(path: str) -> Any:
        if path == "/system":
            return {"Version": "1.12.5"}
        raise OrthancError(f"Orthanc could not answer GET {path}: 404")

    # as the plugin builds it: destination secrets sealed with the data folder's key
    config = ConfigStore(engine, secrets=SecretBox.from_key_file(tmp_path / "secrets.key"))
    intake = Intake(jobs, PipelineRegistry.from_entry_points(), summarize, config=config)
    table = build_routes(NodeContext(settings=Settings(), intake=intake, get_json=get_json))
    return ApiNode(table=table, jobs=jobs, deliveries=DeliveryStore(engine), config=intake.config)
