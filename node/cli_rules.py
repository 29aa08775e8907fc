"""`ai-node rules export|import`: the routing rules as a YAML file, on the node's own host.

The commands open the job database the node uses (no Orthanc needed) and go through the same
checks as the REST API (node.web.rules_api): an import validates every rule, names every
problem, shows what would change, and changes nothing without ``--apply``. Changes are audited
with the operating-system user as ``cli:<user>``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from node.config import load_settings
from node.jobs.config_store import ConfigStore
from node.jobs.database import create_engine_for, migrate
from node.web.http import Request
from node.web.params import RequestError
from node.web.rules_api import RulesApi
from pipelines.registry import PipelineRegistry


def _rules_api(args: argparse.Namespace) -> RulesApi:
    settings = load_settings(args.config)
    if args.data_dir:
        settings = settings.with_overrides(data_dir=args.data_dir)
    url = settings.resolved_database_url
    migrate(url)
    return RulesApi(ConfigStore(create_engine_for(url)), PipelineRegistry.from_settings(settings))


def cmd_export(args: argparse.Namespace) -> int:
    text = _rules_api(args).export(Request("GET")).payload().decode()
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
        print(f"Wrote the rules to {args.out}.")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    try:
        body = args.file.read_bytes()
    except OSError as error:
        print(f"ai-node: cannot read {args.file}: {error.strerror}", file=sys.stderr)
        return 2
    request = Request(
        "POST",
        query={"dry_run": "false" if args.apply else "true", "prune": "true" if args.prune else "false"},
        body=body,
        user=f"cli:{getpass.getuser()}",
    )
    try:
        answer = _rules_api(args).import_rules(request).body
    except RequestError as problem:
        print(f"ai-node: {problem.message}", file=sys.stderr)
        for found in problem.details.get("problems", []):
            print(f"  - {_problem(found)}", file=sys.stderr)
        return 2
    _print_diff(answer["diff"])
    if answer["applied"]:
        print("Applied: the node routes the next study with these rules.")
    else:
        print("Dry run: nothing changed. Run again with --apply to make these changes.")
    return 0


def _problem(found: dict[str, Any]) -> str:
    where = f" (line {found['line']}, column {found['column']})" if found.get("line") else ""
    field = f"{found['field']}: " if found.get("field") else ""
    return f"{field}{found.get('message', '')}{where}"


def _print_diff(diff: dict[str, Any]) -> None:
    if not (diff["added"] or diff["removed"] or diff["changed"]):
        print("No changes: the node's rules already match the file.")
    for name in diff["added"]:
        print(f"+ add rule {name}")
    for name in diff["removed"]:
        print(f"- delete rule {name}")
    for change in diff["changed"]:
        print(f"~ rule {change['name']}: {change['field']} {change['before']!r} -> {change['after']!r}")
    for name in diff.get("kept", []):
        print(f"  keep rule {name} (not in the file; --prune deletes it)")


def add_rules_command(commands: Any) -> None:
    """Add ``ai-node rules`` to the subcommands of the ``ai-node`` parser."""
    parser = commands.add_parser("rules", help="export or import the routing rules as YAML")
    actions = parser.add_subparsers(dest="rules_command", required=True)
    for name, handler, help_text in (
        ("export", cmd_export, "write the rules as YAML (to standard output by default)"),
        ("import", cmd_import, "check a rules file and show what it changes; --apply makes the changes"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument(
            "--config", help="YAML settings file (default: $AI_NODE_CONFIG or built-in defaults)"
        )
        action.add_argument("--data-dir", help="the node's data folder (default: the configuration's)")
        action.set_defaults(handler=handler)
        if name == "export":
            action.add_argument("--out", type=Path, help="file to write (default: standard output)")
        else:
            action.add_argument("file", type=Path, help="the rules file (YAML, as `export` writes it)")
            action.add_argument("--apply", action="store_true", help="make the changes (default: dry run)")
            action.add_argument("--prune", action="store_true", help="also delete rules the file lacks")
