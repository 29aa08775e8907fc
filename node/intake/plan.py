"""Which pipelines apply to a study: pure decisions over a summary of its series.

The loop guard comes first (:meth:`~node.study.summary.StudySummary.input_series`: the node's
own output is never an input), then the stored rules, then each pipeline's series criteria.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from node.pipeline.base import Pipeline
from node.pipeline.registry import PipelineRegistry
from node.rules.completeness import CompletenessCheck, check_completeness
from node.rules.matching import RuleMatch, match_rules
from node.rules.model import Rule
from node.study.criteria import matches
from node.study.summary import StudySeries, StudySummary


@dataclass(frozen=True)
class RouteDecision:
    pipeline: type[Pipeline]
    series: StudySeries


def route(study: StudySummary, pipelines: Iterable[type[Pipeline]]) -> list[RouteDecision]:
    """The pipelines that apply to ``study``, each with the series it would run on."""
    candidates = study.input_series()
    decisions = []
    for pipeline in pipelines:
        chosen = choose_series(candidates, pipeline)
        if chosen is not None:
            decisions.append(RouteDecision(pipeline=pipeline, series=chosen))
    return decisions


def choose_series(candidates: Sequence[StudySeries], pipeline: type[Pipeline]) -> StudySeries | None:
    """The series a pipeline would run on: the matching series with the most instances."""
    matching = [series for series in candidates if not matches(series.summary, pipeline.accepts)]
    if not matching:
        return None
    return max(matching, key=lambda series: series.summary.instance_count)


# --------------------------------------------------------------------------------------------
# Routing rules: which jobs a study gets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedJob:
    """One job the rules ask for: a pipeline on a series, results to destinations."""

    pipeline: type[Pipeline]
    series: StudySeries
    #: the rules asking for it, urgent first
    rules: tuple[str, ...]
    destinations: tuple[str, ...]
    priority: int


@dataclass(frozen=True)
class IncompleteStudy:
    """A rule that matches but whose required series are not all there yet."""

    rule: Rule
    check: CompletenessCheck


@dataclass(frozen=True)
class RoutingPlan:
    jobs: tuple[PlannedJob, ...]
    matches: tuple[RuleMatch, ...]
    incomplete: tuple[IncompleteStudy, ...]
    #: matched rules whose required series are all there
    complete_rules: tuple[Rule, ...]
    #: why a matched rule's pipeline has no job (not installed, no series it accepts)
    problems: tuple[str, ...]
    #: (rule, pipeline) of each matched rule -> the series chosen, or why there is none (the
    #: rule tester shows these, so they say what routing did)
    choices: dict[tuple[str, str], StudySeries | str] = field(default_factory=dict)


def plan_jobs(
    study: StudySummary,
    rules: Sequence[Rule],
    registry: PipelineRegistry,
    *,
    ignore_requirements: bool = False,
) -> RoutingPlan:
    """The jobs the enabled ``rules`` ask for on ``study``.

    A rule's pipelines run on the series the rule selects (a series-level rule) or on any
    input series (a study-level rule), each pipeline taking the largest one it accepts. Two
    rules asking for the same pipeline make one job: the first (urgent first) rule's series,
    the highest priority, and every destination of both.
    """
    view = study.rule_view()
    rule_matches = tuple(match_rules(rules, view))
    planned: dict[str, PlannedJob] = {}
    incomplete: list[IncompleteStudy] = []
    complete: list[Rule] = []
    problems: list[str] = []
    choices: dict[tuple[str, str], StudySeries | str] = {}
    inputs = study.input_series()
    for match in rule_matches:
        rule = match.rule
        if not match.matched:
            continue
        check = check_completeness(rule, view)
        if check is not None and not check.complete and not ignore_requirements:
            incomplete.append(IncompleteStudy(rule, check))
            continue
        if check is not None:
            complete.append(rule)
        candidates = [s for s in inputs if s.orthanc_id in match.series] if match.series else inputs
        for name in rule.pipelines:
            if name not in registry.names():
                problem = f"rule {rule.name!r} names pipeline {name!r}, which is not installed or not enabled"
                choices[(rule.name, name)] = problem
                problems.append(problem)
                continue
            pipeline = registry.get(name)
            chosen = choose_series(candidates, pipeline)
            if chosen is None:
                why = "; ".join(
                    f"{series.summary.label()}: {', '.join(matches(series.summary, pipeline.accepts))}"
                    for series in candidates
                )
                choices[(rule.name, name)] = (
                    f"none of the {len(candidates)} series rule {rule.name!r} selects is one "
                    f"pipeline {name} accepts: {why or 'there are none'}"
                )
                continue
            choices[(rule.name, name)] = chosen
            earlier = planned.get(name)
            if earlier is None:
                planned[name] = PlannedJob(
                    pipeline=pipeline,
                    series=chosen,
                    rules=(rule.name,),
                    destinations=tuple(rule.destinations),
                    priority=rule.priority.job_priority,
                )
            else:
                planned[name] = PlannedJob(
                    pipeline=pipeline,
                    series=earlier.series,
                    rules=(*earlier.rules, rule.name),
                    destinations=tuple(dict.fromkeys((*earlier.destinations, *rule.destinations))),
                    priority=max(earlier.priority, rule.priority.job_priority),
                )
    return RoutingPlan(
        jobs=tuple(planned.values()),
        matches=rule_matches,
        incomplete=tuple(incomplete),
        complete_rules=tuple(complete),
        problems=tuple(problems),
        choices=choices,
    )
