"""/ai/rules: routing rules — list, create, change, delete, validate, export and import as YAML.

The checks (model, installed pipelines, existing destinations) and the import live in
:mod:`node.rules.book`, which ``ai-node rules`` uses too; this module turns their problems
into 4xx answers. Every change goes through :class:`~node.db.config_store.ConfigStore`,
which writes its audit entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from node.db.common import to_iso
from node.db.config_store import ConfigStore, StoredRule
from node.pipeline.registry import PipelineRegistry
from node.rules.book import InvalidImportError, InvalidStoredRuleError, RuleBook, RuleProblem
from node.rules.files import dump_rules
from node.rules.model import Rule
from node.web.http import ApiResponse, Request
from node.web.params import RequestError, answers, json_object, plural
from node.web.routes import Operation, Route

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


def problems_json(problems: Iterable[RuleProblem]) -> list[dict[str, Any]]:
    return [found.to_json() for found in problems]


class RulesApi:
    def __init__(self, config: ConfigStore, registry: PipelineRegistry) -> None:
        self.config = config
        self.book = RuleBook(config, registry.names())

    def valid_rule(self, document: Mapping[str, Any]) -> Rule:
        rule, problems = self.book.check(document)
        if rule is None:
            raise RequestError(
                422,
                f"the rule is invalid ({plural(len(problems), 'problem')})",
                problems=problems_json(problems),
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
            *(
                Route(
                    path,
                    (
                        Operation(
                            "POST",
                            answers(self.importer(apply=apply, prune=prune)),
                            summary,
                            write=True,
                            request_media_types=(YAML, "text/yaml", "text/plain"),
                            request_schema={"type": "string"},
                        ),
                    ),
                )
                for path, apply, prune, summary in (
                    (
                        "/ai/rules/import",
                        False,
                        False,
                        "What importing a YAML rules file would change (a dry run)",
                    ),
                    (
                        "/ai/rules/import/apply",
                        True,
                        False,
                        "Import a YAML rules file: add and change its rules, keep the others",
                    ),
                    (
                        "/ai/rules/import/replace",
                        True,
                        True,
                        "Import a YAML rules file as the whole rule set: also delete the rules it lacks",
                    ),
                )
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
        _, problems = self.book.check(json_object(request))
        return ApiResponse(200, {"valid": not problems, "problems": problems_json(problems)})

    def export(self, request: Request) -> ApiResponse:
        return ApiResponse(
            200,
            dump_rules(self.stored_rules()),
            content_type=YAML,
            headers={"Content-Disposition": 'attachment; filename="rules.yaml"'},
        )

    def importer(self, *, apply: bool, prune: bool) -> Callable[[Request], ApiResponse]:
        """The handler of one of the import paths (a dry run, apply, or apply and prune)."""
        return lambda request: self.import_rules(request, apply=apply, prune=prune)

    def import_rules(self, request: Request, *, apply: bool, prune: bool) -> ApiResponse:
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RequestError(400, "the rules file is not UTF-8 text") from error
        try:
            done = self.book.import_file(text, apply=apply, prune=prune, actor=request.user)
        except InvalidImportError as error:
            raise RequestError(422, error.message, problems=problems_json(error.problems)) from error
        return ApiResponse(200, done.to_json())

    # -- reading ----------------------------------------------------------------------------

    def stored_rules(self, names: Iterable[str] | None = None) -> list[Rule]:
        try:
            return self.book.stored_rules(names)
        except InvalidStoredRuleError as error:
            # saved by an older node whose rule model accepted it: say so rather than fail with 500
            raise RequestError(409, error.message, problems=problems_json(error.problems)) from error

    def _stored(self, name: str) -> StoredRule:
        stored = self.config.get_rule(name)
        if stored is None:
            raise RequestError(404, f"there is no rule named {name!r}")
        return stored


def _rule_json(stored: StoredRule) -> dict[str, Any]:
    return {
        **stored.document,
        "created_at": to_iso(stored.created_at),
        "updated_at": to_iso(stored.updated_at),
    }
