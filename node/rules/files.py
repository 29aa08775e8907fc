"""Rules as a YAML file: export, import with validation, and the dry-run diff of an import.

The file is a mapping with a ``version`` and a list of ``rules``, each with the fields of
:class:`~node.rules.model.Rule`::

    version: 1
    rules:
      - name: ct-head
        priority: urgent
        level: series
        condition: Modality == "CT" and BodyPartExamined in ["HEAD", "BRAIN"]
        pipelines: [ct-tissue]
        destinations: [this-orthanc]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from node.errors import InvalidRuleError
from node.rules.model import Rule

FILE_VERSION = 1


class RulesFileError(InvalidRuleError):
    """A rules file that cannot be read; ``problems`` lists each thing wrong (the message has
    them all, under a heading)."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems) or (message,)


def dump_rules(rules: Sequence[Rule]) -> str:
    """The YAML text of ``rules``, in the order given."""
    document = {
        "version": FILE_VERSION,
        "rules": [rule.model_dump(mode="json") for rule in rules],
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def load_rules(text: str) -> list[Rule]:
    """Read and validate a rules file; raise :class:`RulesFileError` listing every problem,
    each naming the rule (position and name) and the field."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RulesFileError(f"The rules file is not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise RulesFileError(
            f"The rules file must be a mapping with 'version' and 'rules', not {type(document).__name__}."
        )
    unknown = sorted(set(document) - {"version", "rules"})
    if unknown:
        raise RulesFileError(
            f"The rules file has unknown keys {', '.join(map(repr, unknown))}; "
            "only 'version' and 'rules' are allowed."
        )
    if document.get("version") != FILE_VERSION:
        raise RulesFileError(
            f"The rules file has version {document.get('version')!r}; this node reads version {FILE_VERSION}."
        )
    entries = document.get("rules")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise RulesFileError(f"'rules' must be a list, not {type(entries).__name__}.")

    rules, problems = rules_from_documents(entries)
    if problems:
        raise RulesFileError(
            f"The rules file has {len(problems)} problem{'s' if len(problems) > 1 else ''}:\n"
            + "\n".join(f"- {problem}" for problem in problems),
            problems,
        )
    return rules


def rules_from_documents(entries: Iterable[Any]) -> tuple[list[Rule], list[str]]:
    """Validate rule documents (from a file or the database): the valid rules, and a problem
    per invalid or repeated one, each naming the rule (position and name) and the field."""
    rules: list[Rule] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries, start=1):
        label = _label(index, entry)
        if not isinstance(entry, dict):
            problems.append(f"{label} must be a mapping of fields, not {type(entry).__name__}")
            continue
        try:
            rule = Rule.model_validate(entry)
        except ValidationError as error:
            problems += [f"{label}, {_field_problem(detail)}" for detail in error.errors()]
            continue
        if rule.name in seen:
            problems.append(f"{label} has the same name as rule {seen[rule.name]}; names must be unique")
            continue
        seen[rule.name] = index
        rules.append(rule)
    return rules, problems


def _label(index: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"rule {index} ({name!r})" if isinstance(name, str) and name else f"rule {index}"


def _field_problem(detail: Any) -> str:
    location = ".".join(str(part) for part in detail["loc"]) or "(rule)"
    message = str(detail["msg"]).removeprefix("Value error, ")
    if detail["type"] == "extra_forbidden":
        return f"field {location!r} is not a rule field"
    if detail["type"] == "missing":
        return f"field {location!r} is missing"
    return f"field {location!r}: {message}"


@dataclass(frozen=True)
class FieldChange:
    """One field of one rule that an import would change."""

    name: str
    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class RulesDiff:
    """What importing ``incoming`` over ``current`` would do, rule names sorted."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[FieldChange, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def diff_rules(current: Sequence[Rule], incoming: Sequence[Rule]) -> RulesDiff:
    """Compare rules by name: added, removed, and each changed field with its two values."""
    before = {rule.name: rule.model_dump(mode="json") for rule in current}
    after = {rule.name: rule.model_dump(mode="json") for rule in incoming}
    changes = [
        FieldChange(name=name, field=field, before=before[name][field], after=after[name][field])
        for name in sorted(before.keys() & after.keys())
        for field in Rule.model_fields
        if before[name][field] != after[name][field]
    ]
    return RulesDiff(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        changed=tuple(changes),
    )
