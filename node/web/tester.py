"""POST /ai/rules/test: what the rules would do with a study, clause by clause.

The study is one Orthanc already has (``{"study": "<orthanc id>"}``) or DICOM files sent with
the request: one file as ``application/dicom``, or several, with the choice of rule, as
``multipart/related`` (DICOM parts and an optional ``application/json`` part ``{"rule": ...}``,
the shape of a STOW-RS request). Not ``multipart/form-data``: Orthanc takes a form apart itself,
hands a plug-in one call per part without the request's headers and answers 200, so a form
never reaches the tester (the access filter refuses one sent to /ai/). Either way the study is
seen as routing sees it (the loop guard first: the node's own SEG and SR are never inputs),
and for every rule — or only the stored rule named by ``"rule": "NAME"`` — the answer says
whether it matches, which series it selects, which series each pipeline would run on (or why
none), whether the study is complete, and each clause's verdict on each subject. (A name in
``?rule=`` would be lost: Orthanc passes no query arguments to a POST.) Uploads are limited to
:data:`MAX_UPLOAD` bytes, refused by the access filter from Content-Length before Orthanc reads
the body.

``POST /ai/rules/test/draft`` does the same for a draft rule sent with the study. It needs the
admin role: a draft is code the node runs, and its author should be one who may save rules
(stored rules are an admin's already, so any user may test them).
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

import pydicom
from pydantic import ValidationError
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.db.config_store import ConfigStore
from node.errors import NodeError
from node.intake.plan import plan_jobs
from node.pipeline.registry import PipelineRegistry
from node.rules.book import model_problems
from node.rules.completeness import check_completeness
from node.rules.matching import match_rule, order_rules
from node.rules.model import Rule
from node.study.attributes import study_from_datasets
from node.study.series import SeriesSummary
from node.study.summary import StudySeries, StudySummary
from node.web.http import ApiResponse, Request
from node.web.params import RequestError, answers, json_object
from node.web.routes import Operation, Route
from node.web.rules_api import RulesApi, problems_json

DICOM = "application/dicom"
MULTIPART = "multipart/related"
FORM = "multipart/form-data"
#: the largest upload the tester takes: a few instances' worth (only their headers are read);
#: test a larger study after storing it in Orthanc
MAX_UPLOAD = 16 * 1024 * 1024

RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "study": {
            "type": "object",
            "properties": {
                "study_instance_uid": {"type": "string"},
                "series": {"type": "array", "items": {"type": "object"}},
            },
        },
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "rule": {"type": "string"},
                    "enabled": {"type": "boolean"},
                    "matched": {"type": "boolean"},
                    "series": {"type": "array", "items": {"type": "string"}},
                    "pipelines": {"type": "array", "items": {"type": "object"}},
                    "completeness": {"type": ["object", "null"]},
                    "verdicts": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
    },
}


class RuleTester:
    def __init__(
        self,
        rules: RulesApi,
        config: ConfigStore,
        registry: PipelineRegistry,
        summarize: Callable[[str], StudySummary],
    ) -> None:
        self.rules = rules
        self.config = config
        self.registry = registry
        self.summarize = summarize

    def routes(self) -> list[Route]:
        study = {"type": "string", "description": "Orthanc study id"}
        return [
            Route(
                "/ai/rules/test",
                (
                    Operation(
                        "POST",
                        answers(self.test),
                        "Test the stored rules (or the one named by rule) on a stored study or DICOM files",
                        request_schema={
                            "type": "object",
                            "properties": {
                                "study": study,
                                "rule": {
                                    "type": "string",
                                    "description": "test only the stored rule of this name",
                                },
                            },
                            "required": ["study"],
                        },
                        request_media_types=("application/json", DICOM, MULTIPART),
                        response_schema=RESULT_SCHEMA,
                        max_body=MAX_UPLOAD,
                    ),
                ),
            ),
            Route(
                "/ai/rules/test/draft",
                (
                    Operation(
                        "POST",
                        answers(self.test_draft),
                        "Test a draft rule on a stored study or uploaded DICOM files "
                        "(multipart/related: DICOM parts and a JSON part {rule: {...}})",
                        # not a change, but a draft is code the node runs: only who may save one
                        write=True,
                        request_schema={
                            "type": "object",
                            "properties": {
                                "study": study,
                                "rule": {"type": "object", "description": "a draft rule document"},
                            },
                            "required": ["study", "rule"],
                        },
                        request_media_types=("application/json", MULTIPART),
                        response_schema=RESULT_SCHEMA,
                        max_body=MAX_UPLOAD,
                    ),
                ),
            ),
        ]

    def test(self, request: Request) -> ApiResponse:
        study, rule = self._read(request)
        if rule is not None and not isinstance(rule, str):
            raise RequestError(
                400,
                "a draft rule is tested with POST /ai/rules/test/draft (admin role); "
                'this path tests the stored rules ("rule": "NAME" picks one)',
            )
        return self._answer(study, self._rules(rule))

    def test_draft(self, request: Request) -> ApiResponse:
        study, draft = self._read(request)
        if draft is None:
            raise RequestError(
                400,
                'give the draft rule: {"study": ..., "rule": {...}} as JSON, or a JSON part '
                '{"rule": {...}} beside the DICOM parts of a multipart/related body',
            )
        return self._answer(study, [_draft(draft)])

    def _read(self, request: Request) -> tuple[StudySummary, Any]:
        """The study to test and the ``rule`` sent with it: a stored rule's name, a draft rule
        document, or None."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == DICOM:
            return summary_of_files([_read_dicom(request.body, "the request body")]), None
        if media_type == MULTIPART:
            files, options = _related_parts(request)
            return summary_of_files(files), options.get("rule")
        if media_type == FORM:
            # only reached outside Orthanc, which splits forms itself (see the module's doc)
            raise RequestError(
                415,
                f"send the DICOM files as {DICOM} (one) or {MULTIPART} (several, with a JSON part), "
                f"not {FORM}: Orthanc takes a form apart before the node sees it",
            )
        body = json_object(request)
        study_id = body.get("study")
        if not isinstance(study_id, str) or not study_id:
            raise RequestError(
                400,
                'give {"study": "<Orthanc study id>"} as JSON, or send DICOM files '
                f"({DICOM} or {MULTIPART})",
            )
        try:
            study = self.summarize(study_id)
        except NodeError as error:
            raise RequestError(404, f"Orthanc has no study {study_id}") from error
        return study, body.get("rule")

    def _answer(self, study: StudySummary, rules: Sequence[Rule]) -> ApiResponse:
        return ApiResponse(
            200, {"study": _study_json(study), "results": [self.result(rule, study) for rule in rules]}
        )

    def _rules(self, name: str | None) -> list[Rule]:
        if name is not None:
            if self.config.get_rule(name) is None:
                raise RequestError(404, f"there is no rule named {name!r}")
            return self.rules.stored_rules([name])
        return order_rules(self.rules.stored_rules())

    def result(self, rule: Rule, study: StudySummary) -> dict[str, Any]:
        view = study.rule_view()
        match = match_rule(rule, view)
        completeness = check_completeness(rule, view)
        # what routing would choose, had the rule been enabled and the study been complete
        routing = plan_jobs(
            study, [rule.model_copy(update={"enabled": True})], self.registry, ignore_requirements=True
        )
        return {
            "rule": rule.name,
            "enabled": rule.enabled,
            "level": rule.level.value,
            "priority": rule.priority.value,
            "matched": match.matched,
            "series": list(match.series),
            "pipelines": [_pipeline(name, routing.choices.get((rule.name, name))) for name in rule.pipelines],
            "destinations": list(rule.destinations),
            "completeness": None if completeness is None else completeness.to_json(),
            "verdicts": [
                {
                    "subject": verdict.subject,
                    "matched": verdict.matched,
                    "clauses": [
                        {
                            "text": clause.text,
                            "passed": clause.passed,
                            "values": dict(clause.values),
                            "explanation": clause.describe(),
                        }
                        for clause in verdict.clauses
                    ],
                }
                for verdict in match.verdicts
            ],
        }


def _pipeline(name: str, choice: StudySeries | str | None) -> dict[str, Any]:
    """A pipeline's line in the tester: the series routing chose for it, or routing's reason."""
    if choice is None:  # routing chooses series only for a rule that matches
        return {"name": name, "series_instance_uid": None, "reason": "the rule does not match this study"}
    if isinstance(choice, str):
        return {"name": name, "series_instance_uid": None, "reason": choice}
    return {
        "name": name,
        "series_instance_uid": choice.summary.series_instance_uid,
        "reason": f"runs on {choice.summary.label()}: the largest series the rule selects that it accepts",
    }


def summary_of_files(datasets: Sequence[Dataset]) -> StudySummary:
    """Uploaded instances as routing sees a stored study, series keyed by Series Instance UID."""
    study = study_from_datasets(datasets)
    members: dict[str, list[Dataset]] = {}
    for dataset in datasets:
        members.setdefault(str(dataset.get("SeriesInstanceUID", "")), []).append(dataset)
    series = []
    for item in study.series:
        first = members[item.key][0]
        orientation = first.get("ImageOrientationPatient")
        thickness = first.get("SliceThickness")
        number = first.get("SeriesNumber")
        series.append(
            StudySeries(
                orthanc_id=item.key,
                summary=SeriesSummary(
                    series_instance_uid=item.key,
                    modality=str(first.get("Modality", "")),
                    instance_count=item.instance_count,
                    image_orientation=None if not orientation else tuple(float(v) for v in orientation),
                    sop_class_uid=str(first.get("SOPClassUID", "")) or None,
                    series_description=str(first.get("SeriesDescription", "")),
                    series_number=None if number in (None, "") else int(number),
                    body_part=str(first.get("BodyPartExamined", "")).strip().upper() or None,
                    slice_thickness_mm=None if thickness in (None, "") else float(thickness),
                ),
                manufacturer=str(first.get("Manufacturer", "")),
                attributes=item.attributes,
            )
        )
    return StudySummary(
        orthanc_id="",
        study_instance_uid=str(datasets[0].get("StudyInstanceUID", "")),
        series=tuple(series),
        attributes=study.attributes,
    )


def _read_dicom(data: bytes, label: str) -> Dataset:
    if not data:
        raise RequestError(400, f"{label} is empty; send a DICOM file")
    try:
        # headers are all the rules read; pixel data is never needed here
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError) as error:
        raise RequestError(400, f"{label} is not a DICOM file ({error})") from error


def _related_parts(request: Request) -> tuple[list[Dataset], dict[str, Any]]:
    """The DICOM parts of a multipart/related body, read, and its JSON part (``{}`` if none)."""
    head = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.body)
    if not message.is_multipart():
        raise RequestError(400, f"the {MULTIPART} body could not be read (is the boundary right?)")
    files = []
    options: dict[str, Any] = {}
    for number, part in enumerate(message.iter_parts(), start=1):
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_content_type() == "application/json":
            try:
                decoded = json.loads(data)
            except ValueError as error:
                raise RequestError(400, f"part {number} is not JSON: {error}") from error
            if not isinstance(decoded, dict):
                raise RequestError(400, f'part {number} must be a JSON object, e.g. {{"rule": "NAME"}}')
            options = decoded
        else:
            files.append(_read_dicom(data, f"part {number}"))
    if not files:
        raise RequestError(400, f"the {MULTIPART} body has no DICOM part; attach a DICOM file")
    return files, options


def _draft(document: Any) -> Rule:
    if not isinstance(document, dict):
        raise RequestError(400, "rule must be a rule document (a JSON object)")
    try:
        return Rule.model_validate(document)
    except ValidationError as error:
        problems = problems_json(model_problems(error))
        raise RequestError(422, "the draft rule is invalid", problems=problems) from error


def _study_json(study: StudySummary) -> dict[str, Any]:
    return {
        "study_instance_uid": study.study_instance_uid,
        "series": [
            {
                "key": series.orthanc_id,
                "series_instance_uid": series.summary.series_instance_uid,
                "modality": series.summary.modality,
                "description": series.summary.series_description,
                "instances": series.summary.instance_count,
                # the node's own results are shown but never routed (the loop guard)
                "input": not series.is_node_output,
            }
            for series in study.series
        ],
    }
