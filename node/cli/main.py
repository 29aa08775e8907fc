"""The `ai-node` command: one entry point per process (run, worker) plus admin helpers."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import requests

from node.cli.pipelines import add_pipelines_command, add_worker_options
from node.cli.rules import add_rules_command
from node.config import Settings, load_settings
from node.credentials import (
    RESET_PASSWORD_NOTE,
    Role,
    User,
    add_user,
    credentials_path,
    ensure_credentials,
    load_credentials,
    remove_user,
    reset_password,
    service_auth,
)
from node.errors import ConfigurationError, NodeError
from node.logs import ContextFormatter
from node.support.private import use_private_umask


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    return settings.with_overrides(
        **{
            "data_dir": args.data_dir,
            "orthanc.http_port": args.http_port,
            "orthanc.dicom_port": args.dicom_port,
            "orthanc.stable_age": None if args.stable_age is None else timedelta(seconds=args.stable_age),
            "worker.count": args.workers,
            "cluster.role": getattr(args, "role", None),
        }
    )


def _add_node_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML settings file (default: $AI_NODE_CONFIG or built-in defaults)")
    parser.add_argument(
        "--data-dir", help="folder for Orthanc's storage, the job database and logs (default ./var)"
    )
    parser.add_argument("--http-port", type=int, help="Orthanc HTTP port (default 8042)")
    parser.add_argument("--dicom-port", type=int, help="Orthanc DICOM port (default 4242)")
    parser.add_argument(
        "--stable-age", type=float, help="seconds without new instances before a study is processed"
    )
    parser.add_argument("--workers", type=int, help="number of worker processes (default 1)")


def _logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ContextFormatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"))
    logging.basicConfig(level=settings.log_level, handlers=[handler])


def _prepare_users(settings: Settings) -> None:
    """Create the node's users on its first start and show the admin password, once. A worker
    host has none: it runs no Orthanc and logs in to the cluster's with its own user."""
    if settings.cluster.role == "worker":
        return
    path = credentials_path(settings)
    _, admin = ensure_credentials(path)
    if admin is not None:
        _show_password(admin, path, "Created the node's users")


def _show_password(user: User, path: os.PathLike[str], what: str) -> None:
    print(
        f"{what}. Log in to Orthanc and the node's API as\n"
        f"  user:     {user.name}  (role {user.role.value})\n"
        f"  password: {user.password}\n"
        f"This password is shown only now; it is kept in {path} (readable by this account only).",
        flush=True,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from node.cli.supervisor import Supervisor

    settings = _settings(args)
    _logging(settings)
    _prepare_users(settings)
    return Supervisor(settings).run()


def cmd_worker(args: argparse.Namespace) -> int:
    from node.cli.pipelines import apply_worker_options
    from node.worker import main as worker_main

    settings = apply_worker_options(_settings(args), args)
    _logging(settings)
    worker_main(settings)
    return 0


def _answering(settings: Settings) -> bool:
    """Whether the node's plugin answers /ai/health (healthy, 200, or not, 503)."""
    try:
        auth = service_auth(settings)
    except ConfigurationError:  # no credentials yet: this node never started
        return False
    try:
        answer = requests.get(
            f"{settings.orthanc_url}/ai/health", auth=auth, timeout=2, verify=settings.orthanc_trust
        )
    except requests.RequestException:
        return False
    return answer.status_code in (200, 503)


def cmd_start(args: argparse.Namespace) -> int:
    """Start `ai-node run` in the background and wait until it answers."""
    from node.cli.supervisor import pid_file

    settings = _settings(args)
    if _running_pid(settings) is not None and _answering(settings):
        print(f"The node is already running at {settings.orthanc_url}")
        return 0
    logs = settings.resolved_data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Here, not in the background `run`, so the password reaches the console and not the log.
    _prepare_users(settings)
    command = [sys.executable, "-m", "node.cli.main", "run", *_passthrough(args)]
    with open(logs / "node.log", "ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + settings.orthanc.start_timeout.total_seconds() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print(f"The node did not start:\n{_tail(logs / 'node.log')}", file=sys.stderr)
            return 1
        if _answering(settings):
            print(f"The node is running (pid {process.pid}, pid file {pid_file(settings)}).")
            print(f"  Orthanc: {settings.orthanc_url}/app/explorer.html")
            print(f"  DICOM:   AE title {settings.orthanc.aet}, port {settings.orthanc.dicom_port}")
            print(f"  Logs:    {logs}")
            print(f"  Users:   {credentials_path(settings)} (`ai-node users list`)")
            return 0
        time.sleep(0.3)
    print("The node did not answer in time; see " + str(logs / "node.log"), file=sys.stderr)
    return 1


def _passthrough(args: argparse.Namespace) -> list[str]:
    options = []
    for name in ("config", "data_dir", "http_port", "dicom_port", "stable_age", "workers"):
        value = getattr(args, name)
        if value is not None:
            options += [f"--{name.replace('_', '-')}", str(value)]
    return options


def _tail(path: os.PathLike[str], lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as file:
            return "".join(file.readlines()[-lines:])
    except OSError:
        return ""


def _running_pid(settings: Settings) -> int | None:
    from node.cli.supervisor import pid_file

    path = pid_file(settings)
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def cmd_stop(args: argparse.Namespace) -> int:
    settings = _settings(args)
    pid = _running_pid(settings)
    if pid is None:
        print("The node is not running.")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            print(f"The node (pid {pid}) has stopped.")
            return 0
        time.sleep(0.2)
    print(f"The node (pid {pid}) did not stop within 60 s.", file=sys.stderr)
    return 1


def cmd_demo(args: argparse.Namespace) -> int:
    from node.devtools.demo import run_demo

    settings = _settings(args)
    if not _answering(settings):
        status = cmd_start(args)
        if status:
            return status
    return run_demo(settings, args.study)


_RESTART_NOTE = (
    "Orthanc reads its users when it starts: restart the node (`ai-node stop`, then "
    "`ai-node start`) for this to take effect."
)


def cmd_users(args: argparse.Namespace) -> int:
    settings = _settings(args)
    path = credentials_path(settings)
    if args.action == "list":
        for user in load_credentials(path).users.values():
            note = "  (the node's own)" if user.internal else ""
            print(f"{user.name:<24} {user.role.value:<7}{note}")
        return 0
    if args.action == "add":
        _prepare_users(settings)  # before the first start: the admin's password is shown too
        user = add_user(path, args.name, Role(args.role))
        _show_password(user, path, f"Added user {user.name}")
        print(_RESTART_NOTE)
        return 0
    if args.action == "remove":
        remove_user(path, args.name)
        print(f"Removed user {args.name}; the node refuses their requests from now on.")
        return 0
    user = reset_password(path, args.name)
    _show_password(user, path, f"New password for {user.name}")
    print(RESET_PASSWORD_NOTE.format(name=user.name))
    return 0


def _add_users_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = commands.add_parser("users", help="list, add or remove the node's users; reset a password")
    actions = users.add_subparsers(dest="action", required=True)
    for action, help_text in (
        ("list", "the users and their roles"),
        ("add", "add a user with a random password (shown once)"),
        ("remove", "remove a user"),
        ("reset-password", "give a user a new random password (shown once)"),
    ):
        parser = actions.add_parser(action, help=help_text)
        _add_node_options(parser)
        if action != "list":
            parser.add_argument("name", help="user name")
        if action == "add":
            parser.add_argument(
                "--role",
                choices=[role.value for role in Role],
                default=Role.VIEWER.value,
                help="admin: may change anything; viewer: reads only (default); "
                "sender: may only store studies (STOW-RS); worker: a worker host's account in a "
                "cluster (reads, stores results)",
            )
        parser.set_defaults(handler=cmd_users)


def cmd_tls_self_signed(args: argparse.Namespace) -> int:
    from node.orthanc.tls import make_self_signed

    settings = _settings(args)
    folder = args.out or settings.resolved_data_dir / "tls"
    pair = make_self_signed(folder, names=args.name, days=args.days)
    print(
        f"Wrote a self-signed certificate {pair.certificate} and its key {pair.private_key} "
        f"(readable by this account only), valid {args.days} days.\n"
        "For HTTPS on the node's HTTP port, add to the node's settings:\n\n"
        "orthanc:\n"
        "  https:\n"
        f"    certificate: {pair.certificate}\n"
        f"    private_key: {pair.private_key}\n\n"
        f"Clients trust it by being given {pair.certificate} (curl --cacert, a browser's "
        "certificate import); DICOM TLS can use the same pair (README, Access: TLS)."
    )
    return 0


def _add_tls_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tls = commands.add_parser("tls", help="certificates for HTTPS and DICOM TLS")
    actions = tls.add_subparsers(dest="action", required=True)
    parser = actions.add_parser(
        "self-signed", help="make a self-signed certificate and key for a first run (DATA_DIR/tls/)"
    )
    _add_node_options(parser)
    parser.add_argument("--out", type=Path, help="folder for node.crt and node.key (default DATA_DIR/tls)")
    parser.add_argument(
        "--name",
        action="append",
        default=[],
        help="a host name or IP address other hosts reach the node by (repeatable); this "
        "machine's name, localhost, 127.0.0.1 and ::1 are always included",
    )
    parser.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    parser.set_defaults(handler=cmd_tls_self_signed)


def main(argv: list[str] | None = None) -> int:
    # Everything the node and the processes it starts create (Orthanc's storage, the job
    # database, logs, keys) is readable by this account only.
    use_private_umask()
    parser = argparse.ArgumentParser(prog="ai-node", description="AI node for Orthanc")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler, help_text in (
        ("run", cmd_run, "run Orthanc and the workers in the foreground (Ctrl-C stops them)"),
        ("start", cmd_start, "run the node in the background"),
        ("stop", cmd_stop, "stop a node started with `start` or `run`"),
        ("worker", cmd_worker, "run one worker process (`run` starts these)"),
        ("demo", cmd_demo, "send a sample study and print the results"),
    ):
        command = commands.add_parser(name, help=help_text)
        _add_node_options(command)
        command.set_defaults(handler=handler)
        if name == "demo":
            command.add_argument("--study", choices=["ct", "mr"], default="ct", help="sample study to send")
        if name in ("run", "start"):
            command.add_argument(
                "--role",
                choices=["all", "orthanc", "worker"],
                help="what this host runs: Orthanc and workers (all, the default), Orthanc only, "
                "or workers only (a host of a cluster; docs/scaling.md)",
            )
        if name == "worker":
            add_worker_options(command)
    add_pipelines_command(commands)
    add_rules_command(commands)
    _add_users_command(commands)
    _add_tls_command(commands)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except NodeError as error:
        print(f"ai-node: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
