"""The node's stored rules, checked against what the node has: what the REST API
(:mod:`node.web.rules_api`) and ``ai-node rules`` share.

A rule is accepted only when the :class:`~node.rules.model.Rule` model accepts it *and* every
pipeline it names is installed and every destination it names exists, so a typo is refused
when it is typed, not discovered when a study arrives. Unlike the rest of :mod:`node.rules`
this module reads and writes the job database, through
:class:`~node.db.config_store.ConfigStore`, which audits every change.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from pydantic import ValidationError

from node import THIS_ORTHANC
from node.db.config_store import ConfigStore, StoredRule
from node.errors import InvalidRuleError
from node.rules.condition import InvalidConditionError
from node.rules.files import RulesDiff, RulesFileError, diff_rules, load_rules
from node.rules.model import Rule


@dataclass(frozen=True)
class RuleProblem:
    """One thing wrong with a rule: the field (dotted path, None for the whole rule or file),
    the message, and for a condition that does not compile, where in it."""

    field: str | None
    message: str
    line: int | None = None
    column: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RuleProblemsError(InvalidRuleError):
    """Rules that cannot be used, with every problem found."""

    def __init__(self, message: str, problems: Sequence[RuleProblem]) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class InvalidImportError(RuleProblemsError):
    """A rules file that cannot be imported; nothing was changed."""


class InvalidStoredRuleError(RuleProblemsError):
    """A stored rule, saved by an older node whose rule model accepted it, no longer validates."""


def model_problems(error: ValidationError) -> list[RuleProblem]:
    """Each of pydantic's complaints as a problem; a condition that does not compile keeps
    the line and column rule-engine gave (the model chains the original error)."""
    problems = []
    for detail in error.errors():
        field = ".".join(str(part) for part in detail["loc"]) or None
        message = str(detail["msg"]).removeprefix("Value error, ")
        cause = getattr(detail.get("ctx", {}).get("error"), "__cause__", None)
        if isinstance(cause, InvalidConditionError):
            problems.append(RuleProblem(field, message, cause.line, cause.column))
        elif detail["type"] == "extra_forbidden":
            problems.append(RuleProblem(field, f"{field!r} is not a rule field"))
        else:
            problems.append(RuleProblem(field, message))
    return problems


@dataclass(frozen=True)
class RulesImport:
    """What an import did (``applied``) or would do."""

    diff: RulesDiff
    applied: bool
    prune: bool

    def to_json(self) -> dict[str, Any]:
        diff = self.diff
        return {
            "applied": self.applied,
            "prune": self.prune,
            "diff": {
                "added": list(diff.added),
                "removed": list(diff.removed) if self.prune else [],
                "changed": [
                    {"name": c.name, "field": c.field, "before": c.before, "after": c.after}
                    for c in diff.changed
                ],
                # kept because the file lacks them and prune is off: said, so nobody
                # believes an import made the node's rules equal to the file
                "kept": [] if self.prune else list(diff.removed),
            },
        }


class RuleBook:
    def __init__(self, config: ConfigStore, installed: Collection[str]) -> None:
        self.config = config
        #: names of the enabled pipelines
        self.installed = installed

    def destination_names(self) -> set[str]:
        return {THIS_ORTHANC, *(stored.name for stored in self.config.list_destinations())}

    def reference_problems(self, rule: Rule, destinations: set[str]) -> list[RuleProblem]:
        """Pipelines that are not installed and destinations that do not exist."""
        installed = set(self.installed)
        problems = [
            RuleProblem(
                f"pipelines.{index}",
                f"pipeline {name!r} is not installed; installed: {', '.join(sorted(installed)) or 'none'}",
            )
            for index, name in enumerate(rule.pipelines)
            if name not in installed
        ]
        problems += [
            RuleProblem(
                f"destinations.{index}",
                f"destination {name!r} does not exist; defined: {', '.join(sorted(destinations))}",
            )
            for index, name in enumerate(rule.destinations)
            if name not in destinations
        ]
        return problems

    def check(self, document: Mapping[str, Any]) -> tuple[Rule | None, list[RuleProblem]]:
        """The rule and no problems, or None and every problem found."""
        try:
            rule = Rule.model_validate(document)
        except ValidationError as error:
            return None, model_problems(error)
        problems = self.reference_problems(rule, self.destination_names())
        return (None if problems else rule), problems

    def stored_rules(self, names: Iterable[str] | None = None) -> list[Rule]:
        """The stored rules (only ``names``, if given), by name; :class:`InvalidStoredRuleError`
        for one that no longer validates."""
        stored = self.config.list_rules()
        if names is not None:
            wanted = set(names)
            stored = [item for item in stored if item.name in wanted]
        return [_parsed(item) for item in stored]

    def import_file(self, text: str, *, apply: bool, prune: bool, actor: str) -> RulesImport:
        """Check a rules file as a whole and show what it changes; with ``apply``, make the
        changes (and with ``prune``, delete the rules it lacks). :class:`InvalidImportError`
        lists every problem, and nothing is changed then."""
        heading = "the rules file is invalid; nothing was imported"
        try:
            incoming = load_rules(text)
        except RulesFileError as error:
            problems = [RuleProblem(None, found) for found in error.problems]
            raise InvalidImportError(heading, problems) from error
        destinations = self.destination_names()
        problems = [
            replace(found, field=f"{rule.name}.{found.field}")
            for rule in incoming
            for found in self.reference_problems(rule, destinations)
        ]
        if problems:
            raise InvalidImportError(heading, problems)
        diff = diff_rules(self.stored_rules(), incoming)
        if apply:
            by_name = {rule.name: rule for rule in incoming}
            # One transaction per rule (each with its audit entry): additions and changes
            # first, so a failure part-way never leaves the node with fewer rules than before.
            for name in [*diff.added, *sorted({change.name for change in diff.changed})]:
                self.config.save_rule(by_name[name].model_dump(mode="json"), actor=actor)
            if prune:
                for name in diff.removed:
                    self.config.delete_rule(name, actor=actor)
        return RulesImport(diff, applied=apply, prune=prune)


def _parsed(stored: StoredRule) -> Rule:
    try:
        return Rule.model_validate(stored.document)
    except ValidationError as error:
        raise InvalidStoredRuleError(
            f"the stored rule {stored.name!r} no longer validates; fix or delete it", model_problems(error)
        ) from error
