"""`ai-node rules export|import`: the routing rules as a YAML file, on the node's own host.

The commands open the job database the node uses (no Orthanc needed) and go through the same
checks as the REST API (node.rules.book): an import validates every rule, names every
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
from node.db.config_store import ConfigStore
from node.db.database import create_engine_for, migrate
from node.pipeline.registry import PipelineRegistry
from node.rules.book import RuleBook, RuleProblem, RuleProblemsError
from node.rules.files import RulesDiff, dump_rules


def _rule_book(args: argparse.Namespace) -> RuleBook:
    settings = load_settings(args.config)
    if args.data_dir:
        settings = settings.with_overrides(data_dir=args.data_dir)
    url = settings.resolved_database_url
    migrate(url)
    return RuleBook(ConfigStore(create_engine_for(url)), PipelineRegistry.from_settings(settings).names())


def cmd_export(args: argparse.Namespace) -> int:
    try:
        text = dump_rules(_rule_book(args).stored_rules())
    except RuleProblemsError as problem:
        return _refused(problem)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
        print(f"Wrote the rules to {args.out}.")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    try:
        text = args.file.read_bytes().decode("utf-8")
    except OSError as error:
        print(f"ai-node: cannot read {args.file}: {error.strerror}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"ai-node: {args.file} is not UTF-8 text", file=sys.stderr)
        return 2
    try:
        done = _rule_book(args).import_file(
            text, apply=args.apply, prune=args.prune, actor=f"cli:{getpass.getuser()}"
        )
    except RuleProblemsError as problem:
        return _refused(problem)
    _print_diff(done.diff, prune=args.prune)
    if done.applied:
        print("Applied: the node routes the next study with these rules.")
    else:
        print("Dry run: nothing changed. Run again with --apply to make these changes.")
    return 0


def _refused(error: RuleProblemsError) -> int:
    print(f"ai-node: {error.message}", file=sys.stderr)
    for found in error.problems:
        print(f"  - {_problem(found)}", file=sys.stderr)
    return 2


def _problem(found: RuleProblem) -> str:
    where = f" (line {found.line}, column {found.column})" if found.line else ""
    field = f"{found.field}: " if found.field else ""
    return f"{field}{found.message}{where}"


def _print_diff(diff: RulesDiff, *, prune: bool) -> None:
    if not (diff.added or diff.changed or (prune and diff.removed)):
        print("No changes: the node's rules already match the file.")
    for name in diff.added:
        print(f"+ add rule {name}")
    for name in diff.removed if prune else ():
        print(f"- delete rule {name}")
    for change in diff.changed:
        print(f"~ rule {change.name}: {change.field} {change.before!r} -> {change.after!r}")
    for name in () if prune else diff.removed:
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
