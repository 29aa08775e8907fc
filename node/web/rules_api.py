"""/ai/rules: routing rules — list, create, change, delete, validate, export and import as YAML.

A rule is saved only when the :class:`~node.rules.model.Rule` model accepts it *and* every
pipeline it names is installed and every destination it names exists, so a typo is refused
when it is typed, not discovered when a study arrives. Every change goes through
:class:`~node.jobs.config_store.ConfigStore`, which writes its audit entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from node.errors import InvalidRuleError
from node.jobs.common import to_iso
from node.jobs.config_store import ConfigStore, StoredRule
from node.rules.engine import InvalidConditionError
from node.rules.files import diff_rules, dump_rules, load_rules
from node.rules.model import THIS_ORTHANC, Rule
from node.web.http import ApiResponse, Request
from node.web.params import RequestError, answers, flag, json_object, plural
from node.web.routes import Operation, Route
from pipelines.registry import PipelineRegistry

YAML = "application/yaml"

PROBLEMS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "field": {"type": ["string", "null"]},
            "message": {"type": "string"},
            "line": {"type": ["integer", "null"]},
            "column": {"type": ["integer", "null"]},
        },
    },
}


def problem(
    field: str | None, message: str, line: int | None = None, column: int | None = None
) -> dict[str, Any]:
    return {"field": field, "message": message, "line": line, "column": column}


def model_problems(error: ValidationError) -> list[dict[str, Any]]:
    """Each of pydantic's complaints as a problem; a condition that does not compile keeps
    the line and column rule-engine gave (the model chains the original error)."""
    problems = []
    for detail in error.errors():
        field = ".".join(str(part) for part in detail["loc"]) or None
        message = str(detail["msg"]).removeprefix("Value error, ")
        cause = getattr(detail.get("ctx", {}).get("error"), "__cause__", None)
        if isinstance(cause, InvalidConditionError):
            problems.append(problem(field, message, cause.line, cause.column))
        elif detail["type"] == "extra_forbidden":
            problems.append(problem(field, f"{field!r} is not a rule field"))
        else:
            problems.append(problem(field, message))
    return problems


class RulesApi:
    def __init__(self, config: ConfigStore, registry: PipelineRegistry) -> None:
        self.config = config
        self.registry = registry

    # -- checking ---------------------------------------------------------------------------

    def destination_names(self) -> set[str]:
        return {THIS_ORTHANC, *(stored.name for stored in self.config.list_destinations())}

    def reference_problems(self, rule: Rule, destinations: set[str]) -> list[dict[str, Any]]:
        """Pipelines that are not installed and destinations that do not exist."""
        installed = set(self.registry.names())
        problems = [
            problem(
                f"pipelines.{index}",
                f"pipeline {name!r} is not installed; installed: {', '.join(sorted(installed)) or 'none'}",
            )
            for index, name in enumerate(rule.pipelines)
            if name not in installed
        ]
        problems += [
            problem(
                f"destinations.{index}",
                f"destination {name!r} does not exist; defined: {', '.join(sorted(destinations))}",
            )
            for index, name in enumerate(rule.destinations)
            if name not in destinations
        ]
        return problems

    def check(self, document: Mapping[str, Any]) -> tuple[Rule | None, list[dict[str, Any]]]:
        """The rule and no problems, or None and every problem found."""
        try:
            rule = Rule.model_validate(document)
        except ValidationError as error:
            return None, model_problems(error)
        problems = self.reference_problems(rule, self.destination_names())
        return (None if problems else rule), problems

    def valid_rule(self, document: Mapping[str, Any]) -> Rule:
        rule, problems = self.check(document)
        if rule is None:
            raise RequestError(
                422, f"the rule is invalid ({plural(len(problems), 'problem')})", problems=problems
            )
        return rule

    # -- routes -----------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        rule_schema = Rule.model_json_schema(mode="validation")
        stored_schema = Rule.model_json_schema(mode="serialization")
        return [
            Route(
                "/ai/rules",
                (
                    Operation(
                        "GET",
                        answers(self.list_rules),
                        "Routing rules, by name",
                        response_schema={"type": "array", "items": stored_schema},
                    ),
                    Operation(
                        "POST",
                        answers(self.create),
                        "Create a rule (422 lists every problem, 409 if the name exists)",
                        write=True,
                        request_schema=rule_schema,
                        response_schema=stored_schema,
                    ),
                ),
            ),
            Route(
                "/ai/rules/validate",
                (
                    Operation(
                        "POST",
                        answers(self.validate),
                        "Check a draft rule without saving it",
                        request_schema=rule_schema,
                        response_schema={
                            "type": "object",
                            "properties": {"valid": {"type": "boolean"}, "problems": PROBLEMS_SCHEMA},
                        },
                    ),
                ),
            ),
            Route(
                "/ai/rules/export",
                (
                    Operation(
                        "GET",
                        answers(self.export),
                        "Every rule as a YAML rules file",
                        response_media_type=YAML,
                        response_schema={"type": "string"},
                    ),
                ),
            ),
            Route(
                "/ai/rules/import",
                (
                    Operation(
                        "POST",
                        answers(self.import_rules),
                        "Import a YAML rules file: the diff, applied only with dry_run=false",
                        write=True,
                        query={
                            "dry_run": "true (default): only show what would change; false: apply it",
                            "prune": "true: delete the rules the file does not have (default false)",
                        },
                        request_media_types=(YAML, "text/yaml", "text/plain"),
                        request_schema={"type": "string"},
                    ),
                ),
            ),
            Route(
                "/ai/rules/{name}",
                (
                    Operation("GET", answers(self.get), "One rule", response_schema=stored_schema),
                    Operation(
                        "PUT",
                        answers(self.replace),
                        "Change a rule (the body's name must be the path's or absent)",
                        write=True,
                        request_schema=rule_schema,
                        response_schema=stored_schema,
                    ),
                    Operation("DELETE", answers(self.delete), "Delete a rule", write=True),
                ),
            ),
        ]

    def list_rules(self, request: Request) -> ApiResponse:
        return ApiResponse(200, [_rule_json(stored) for stored in self.config.list_rules()])

    def get(self, request: Request) -> ApiResponse:
        return ApiResponse(200, _rule_json(self._stored(request.groups[0])))

    def create(self, request: Request) -> ApiResponse:
        rule = self.valid_rule(json_object(request))
        if self.config.get_rule(rule.name) is not None:
            raise RequestError(409, f"a rule named {rule.name!r} exists already; change it with PUT")
        _, after = self.config.save_rule(rule.model_dump(mode="json"), actor=request.user)
        return ApiResponse(201, _rule_json(after))

    def replace(self, request: Request) -> ApiResponse:
        name = request.groups[0]
        document = json_object(request)
        given = document.setdefault("name", name)
        if given != name:
            raise RequestError(
                400, f"the body names rule {given!r} but the path {name!r}; rules cannot be renamed"
            )
        self._stored(name)
        rule = self.valid_rule(document)
        _, after = self.config.save_rule(rule.model_dump(mode="json"), actor=request.user)
        return ApiResponse(200, _rule_json(after))

    def delete(self, request: Request) -> ApiResponse:
        stored = self._stored(request.groups[0])
        self.config.delete_rule(stored.name, actor=request.user)
        return ApiResponse(200, _rule_json(stored))

    def validate(self, request: Request) -> ApiResponse:
        _, problems = self.check(json_object(request))
        return ApiResponse(200, {"valid": not problems, "problems": problems})

    def export(self, request: Request) -> ApiResponse:
        return ApiResponse(
            200,
            dump_rules(self.stored_rules()),
            content_type=YAML,
            headers={"Content-Disposition": 'attachment; filename="rules.yaml"'},
        )

    def import_rules(self, request: Request) -> ApiResponse:
        dry_run = flag(request.query, "dry_run", True)
        prune = flag(request.query, "prune", False)
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RequestError(400, "the rules file is not UTF-8 text") from error
        try:
            incoming = load_rules(text)
        except InvalidRuleError as error:
            raise RequestError(
                422, "the rules file is invalid; nothing was imported", problems=_listed(error.message)
            ) from error
        destinations = self.destination_names()
        problems = [
            {**found, "field": f"{rule.name}.{found['field']}"}
            for rule in incoming
            for found in self.reference_problems(rule, destinations)
        ]
        if problems:
            raise RequestError(422, "the rules file is invalid; nothing was imported", problems=problems)

        current = self.stored_rules()
        diff = diff_rules(current, incoming)
        by_name = {rule.name: rule for rule in incoming}
        changed = sorted({change.name for change in diff.changed})
        if not dry_run:
            # One transaction per rule (each with its audit entry): additions and changes
            # first, so a failure part-way never leaves the node with fewer rules than before.
            for name in [*diff.added, *changed]:
                self.config.save_rule(by_name[name].model_dump(mode="json"), actor=request.user)
            if prune:
                for name in diff.removed:
                    self.config.delete_rule(name, actor=request.user)
        return ApiResponse(
            200,
            {
                "applied": not dry_run,
                "prune": prune,
                "diff": {
                    "added": list(diff.added),
                    "removed": list(diff.removed) if prune else [],
                    "changed": [
                        {"name": c.name, "field": c.field, "before": c.before, "after": c.after}
                        for c in diff.changed
                    ],
                    # kept because the file lacks them and prune is off: said, so nobody
                    # believes an import made the node's rules equal to the file
                    "kept": [] if prune else list(diff.removed),
                },
            },
        )

    # -- reading ----------------------------------------------------------------------------

    def stored_rules(self, names: Iterable[str] | None = None) -> list[Rule]:
        stored = self.config.list_rules()
        if names is not None:
            wanted = set(names)
            stored = [item for item in stored if item.name in wanted]
        return [_parsed(item) for item in stored]

    def _stored(self, name: str) -> StoredRule:
        stored = self.config.get_rule(name)
        if stored is None:
            raise RequestError(404, f"there is no rule named {name!r}")
        return stored


def _parsed(stored: StoredRule) -> Rule:
    try:
        return Rule.model_validate(stored.document)
    except ValidationError as error:
        # saved by an older node whose rule model accepted it: say so rather than fail with 500
        raise RequestError(
            409,
            f"the stored rule {stored.name!r} no longer validates; fix or delete it",
            problems=model_problems(error),
        ) from error


def _rule_json(stored: StoredRule) -> dict[str, Any]:
    return {
        **stored.document,
        "created_at": to_iso(stored.created_at),
        "updated_at": to_iso(stored.updated_at),
    }


def _listed(message: str) -> Sequence[dict[str, Any]]:
    """load_rules' message (a heading, then one ``- problem`` line each) as problems."""
    found: list[str] = []
    for line in message.splitlines()[1:]:
        if line.startswith("- "):
            found.append(line[2:])
        elif found:  # a condition's pointer lines belong to the problem above them
            found[-1] += "\n" + line
    return [problem(None, text) for text in found] or [problem(None, message)]
