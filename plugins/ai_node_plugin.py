"""Orthanc Python plugin (API 4.0) of the AI node: thin glue, nothing heavy runs here.

- OnChange only wakes the change follower; the follower reads Orthanc's /changes log on its
  own thread and queues jobs for stable studies (node.intake.changes, node.intake.handoff).
- REST routes under /ai/ are answered by node.web.api.
- Every HTTP request passes the incoming-request filter: after Orthanc's basic-auth check,
  node.web.access decides by role (admin, viewer) and CSRF checks; a refusal is a 403.
- With orthanc.max_storage_size, an incoming C-STORE filter refuses instances past the cap
  (node.orthanc.storage_cap) rather than letting Orthanc delete old patients.
Models never run in Orthanc's process: workers claim the queued jobs.
"""

import json
import logging
import sys
import threading
from datetime import UTC, datetime

import orthanc

_SETTINGS = json.loads(orthanc.GetConfiguration()).get("AINode", {})
# Orthanc embeds Debian's python3.11; the node's packages live in its virtualenv.
sys.path[:0] = [_SETTINGS["ProjectRoot"], _SETTINGS["SitePackages"]]

from node.cli.supervisor import RESTARTS_PREFIX, restarts_key  # noqa: E402
from node.config import load_settings  # noqa: E402
from node.credentials import CredentialsFile, credentials_path  # noqa: E402
from node.db.config_store import ConfigStore  # noqa: E402
from node.db.database import create_engine_for, migrate  # noqa: E402
from node.db.errors import QueueFullError  # noqa: E402
from node.db.intake_problems import IntakeProblemStore  # noqa: E402
from node.db.jobs import JobStore  # noqa: E402
from node.db.secrets import SecretBox  # noqa: E402
from node.errors import OrthancError  # noqa: E402
from node.intake.changes import CURSOR_KEY, ChangeFollower, follower_lag  # noqa: E402
from node.intake.handoff import Intake  # noqa: E402
from node.intake.leader import RoutingLeadership  # noqa: E402
from node.intake.recovery import IntakeRecovery  # noqa: E402
from node.logs import ContextFormatter  # noqa: E402
from node.orthanc import storage_cap  # noqa: E402
from node.orthanc.study import summarize_study  # noqa: E402
from node.pipeline.registry import PipelineRegistry  # noqa: E402
from node.web.access import AccessPolicy, basic_credentials  # noqa: E402
from node.web.app import NodeContext, build_routes  # noqa: E402
from node.web.http import ApiResponse, Request  # noqa: E402
from node.web.routes import RouteTable  # noqa: E402


class _OrthancLogHandler(logging.Handler):
    def emit(self, record):
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            orthanc.LogError(message)
        elif record.levelno >= logging.WARNING:
            orthanc.LogWarning(message)
        else:
            orthanc.LogInfo(message)


log = logging.getLogger("node.plugin")


# orthanc.OrthancException's first argument is Orthanc's error code; this one is "no such
# resource" (a deleted study), which no retry changes.
_UNKNOWN_RESOURCE = 17


def _get_json(path):
    try:
        return json.loads(orthanc.RestApiGet(path))
    except orthanc.OrthancException as error:
        code = error.args[0] if error.args else None
        raise OrthancError(
            f"Orthanc could not answer GET {path}: {error}", not_found=code == _UNKNOWN_RESOURCE
        ) from error


class _Plugin:
    def __init__(self):
        self.settings = load_settings(_SETTINGS["ConfigFile"])
        handler = _OrthancLogHandler()
        handler.setFormatter(ContextFormatter("ai-node %(name)s: %(message)s"))
        logging.getLogger("node").addHandler(handler)
        logging.getLogger("node").setLevel(self.settings.log_level)
        url = self.settings.resolved_database_url
        migrate(url)
        self.store = JobStore(create_engine_for(url), max_queued_jobs=self.settings.worker.max_queued_jobs)
        config = ConfigStore(
            self.store.engine, secrets=SecretBox.from_key_file(self.settings.resolved_secrets_key_file)
        )
        sealed = config.seal_clear_secrets()
        if sealed:
            log.info("encrypted the stored secrets of destinations %s", ", ".join(sealed))
        registry = PipelineRegistry.from_settings(self.settings)
        self.intake = Intake(
            self.store, registry, lambda study_id: summarize_study(_get_json, study_id), config=config
        )
        cap = self.settings.orthanc.max_storage_size
        self.storage = None if cap is None else storage_cap.StorageCap(int(cap), _get_json)
        self.intake.seed_default_rule()
        self.recovery = IntakeRecovery(
            self.intake, IntakeProblemStore(self.store.engine), self.settings.intake
        )
        credentials = CredentialsFile(credentials_path(self.settings))
        # The policy reads the route table, and the table's /ai/me asks the policy: the table
        # is given to the policy once built.
        self.access = AccessPolicy(
            RouteTable(()), credentials.current, authentication=self.settings.orthanc.authentication
        )
        self.routes = build_routes(
            NodeContext(
                settings=self.settings,
                intake=self.intake,
                get_json=_get_json,
                health_extra=self._health_extra,
                access=self.access,
            )
        )
        self.access.routes = self.routes
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.follower = None
        self.thread = None
        #: with a PostgreSQL job database, one Orthanc of a cluster routes; the others stand by
        self.leadership = RoutingLeadership(self.store.engine)
        #: why the follower's last pass failed (the job database unreachable, say); None after
        #: a pass that worked
        self.follower_error = None

    def _health_extra(self):
        """The follower's part of /ai/health; ``problems`` make the node unhealthy (503)."""
        problems = []
        alive = bool(self.thread and self.thread.is_alive())
        intake = {"follower_alive": alive, "last_error": self.follower_error}
        if not alive:
            problems.append("the change follower is not running: no new study is routed")
        intake["routing"] = "leading" if self.leadership.leading else "standby (another Orthanc routes)"
        if self.follower is not None or not self.leadership.leading:
            # a standby judges the cluster's routing by the cursor the leading Orthanc stored
            cursor = (
                self.follower.cursor
                if self.follower is not None
                else int(self.store.get_state(CURSOR_KEY) or 0)
            )
            intake["change_cursor"] = cursor
            try:
                lag = follower_lag(_get_json, cursor, datetime.now(UTC))
            except OrthancError as error:
                problems.append(f"the change follower's lag is unknown: {error}")
            else:
                intake.update(lag.to_json())
                limit = self.settings.intake.max_lag
                if lag.oldest_unhandled_age is not None and lag.oldest_unhandled_age > limit:
                    problems.append(
                        f"routing is {lag.oldest_unhandled_age.total_seconds():.0f} s behind Orthanc "
                        f"({lag.changes_behind} changes unread; the limit is {limit.total_seconds():g} s)"
                        + (f": {self.follower_error}" if self.follower_error else "")
                    )
        hosts = {
            key.removeprefix(RESTARTS_PREFIX): json.loads(value)
            for key, (value, _) in self.store.states(RESTARTS_PREFIX).items()
        }
        here = restarts_key(self.settings).removeprefix(RESTARTS_PREFIX)
        return {
            "orthanc": {"aet": self.settings.orthanc.aet, "dicom_port": self.settings.orthanc.dicom_port},
            "storage": None if self.storage is None else self.storage.state().to_json(),
            "intake": intake,
            # kept by `ai-node run` (node.cli.supervisor): Orthanc's and the workers' restarts on
            # this host, and on the other hosts of a cluster
            "restarts": hosts.pop(here, None),
            "restarts_elsewhere": hosts,
            "problems": problems,
        }

    def user_of(self, headers):
        """Who is asking, for the audit trail (the filter has already let them in)."""
        if not self.settings.orthanc.authentication:
            return "anonymous"
        pair = basic_credentials(headers)
        return "anonymous" if pair is None else pair[0]

    def allows(self, uri, **request):
        """Orthanc's incoming-HTTP-request filter: True lets the request through, False is 403."""
        method = _METHODS.get(request.get("method"), str(request.get("method")))
        headers = {name.lower(): value for name, value in request.get("headers", {}).items()}
        try:
            decision = self.access.decide(method, uri, headers)
        except Exception:  # e.g. an unreadable credentials file: refuse rather than crash Orthanc
            log.exception("access check of %s %s failed; refused", method, uri)
            return False
        if not decision.allowed:
            log.info("access refused: %s", decision.reason)
        return decision.allowed

    def start_following(self):
        self.thread = threading.Thread(target=self._follow, name="ai-node-changes", daemon=True)
        self.thread.start()
        if self.storage is not None:
            threading.Thread(target=self._measure_storage, name="ai-node-storage", daemon=True).start()

    def _measure_storage(self):
        # Orthanc's REST API may not be called from the C-STORE filter itself: measured here
        while not self.stopping.is_set():
            try:
                refused = self.storage.measure()
            except (OrthancError, KeyError, ValueError):
                log.exception("reading Orthanc's storage size failed; retrying")
            else:
                if refused:  # logged here, once a reading, rather than once an instance
                    log.warning(
                        "refused %s C-STORE instance(s): Orthanc's storage is at "
                        "orthanc.max_storage_size (%s bytes); nothing is deleted to make room",
                        refused,
                        self.storage.cap,
                        extra={"action": "store"},
                    )
            self.stopping.wait(storage_cap.MEASURE_EVERY_S)

    def filter_store(self, received_dicom):
        """Orthanc's incoming C-STORE filter: 0 stores, a DIMSE status refuses."""
        if self.storage.admits(received_dicom.GetInstanceSize()):
            return 0
        return storage_cap.STATUS_REFUSED_OUT_OF_RESOURCES

    def _follow(self):
        stable_age = self.settings.orthanc.stable_age
        while not self.stopping.is_set():
            try:
                if not self.leadership.lead():
                    self.follower = None  # another Orthanc of the cluster routes
                    self.stopping.wait(STANDBY_POLL_S)
                    continue
                if self.follower is None:
                    self.follower = ChangeFollower(
                        _get_json, self.recovery.study_ready, self.store, stable_age=stable_age
                    )
                while self.follower.poll() and not self.stopping.is_set():
                    pass
                # studies whose wait for a rule's required series is over
                self.intake.check_waits()
                # studies set aside whose backoff is over, or that an admin retried
                self.recovery.retry_due()
                self.follower_error = None
            except QueueFullError as error:
                # not a fault: new studies wait in Orthanc, in order, until workers make room
                if self.follower_error != str(error):
                    log.warning("%s", error)
                self.follower_error = str(error)
            except Exception as error:  # e.g. the job database unreachable: nothing can be routed
                self.follower_error = f"{type(error).__name__}: {error}"
                log.exception("following Orthanc's changes failed; retrying in 5 s")
                self.stopping.wait(5)
                continue
            # Woken at once by OnChange; the timeout also checks studies left pending by a restart.
            self.wake.wait(1.0)
            self.wake.clear()

    def on_change(self, change_type, level, resource_id):
        if change_type == orthanc.ChangeType.ORTHANC_STARTED:
            self.start_following()
        elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
            self.stopping.set()
            self.wake.set()
            if self.thread is not None:
                self.thread.join(10)
            self.leadership.release()  # another Orthanc of the cluster takes over at once
        elif change_type in (orthanc.ChangeType.STABLE_STUDY, orthanc.ChangeType.NEW_STUDY):
            self.wake.set()


def _answer(output, route, response):
    # Orthanc's SendHttpStatus refuses 405 and 301 (HttpOutput::SendStatus throws
    # ParameterOutOfRange, answered 500), and 401 in older Orthancs: each has a call of its
    # own, which sends no body (and, for 401, the WWW-Authenticate header a 401 must carry).
    if response.status == 405:
        output.SendMethodNotAllowed(_allowed(route, response))
        return
    if response.status == 401:
        output.SendUnauthorized("ai-node")
        return
    if response.status == 301:
        output.Redirect(response.headers.get("Location", "/"))
        return
    body = response.payload()
    for name, value in response.headers.items():
        output.SetHttpHeader(name, value)
    if response.status == 200:
        # AnswerBuffer sets Content-Type itself; setting it here too would send it twice.
        output.AnswerBuffer(body, response.content_type)
        return
    output.SetHttpHeader("Content-Type", response.content_type)
    # orthanc-python 4.0 takes the body of an error answer as str plus its size in bytes.
    output.SendHttpStatus(response.status, body.decode("utf-8", "replace"), len(body))


def _allowed(route, response):
    """The Allow header of a 405: an explicit one, else the route's methods that the answer
    names as allowed (``{"allowed": ["GET", "POST test"]}`` of a built-in destination), else
    all the route's methods."""
    if "Allow" in response.headers:
        return response.headers["Allow"]
    named = response.body.get("allowed", []) if isinstance(response.body, dict) else []
    methods = [method for method in route.methods if method in named]
    return ",".join(methods or route.methods)


def _callback(route):
    def callback(output, uri, **request):
        method = request["method"]
        operation = route.operation(method)
        if operation is None:
            output.SendMethodNotAllowed(",".join(route.methods))
            return
        headers = {name.lower(): value for name, value in request.get("headers", {}).items()}
        call = Request(
            method=method,
            path=uri,
            groups=tuple(request.get("groups", ())),
            query=request.get("get", {}),
            body=request.get("body", b"") or b"",
            headers=headers,
            user=_plugin.user_of(headers),
        )
        try:
            response = operation.handler(call)
        except Exception:  # a REST call must never take Orthanc's HTTP thread down
            log.exception("REST %s %s failed", method, uri)
            # not the exception's text: a database error quotes its statement, an OS error a path
            response = ApiResponse(503, {"error": "the AI node could not answer; see Orthanc's log"})
        _answer(output, route, response)

    return callback


# The filter gets Orthanc's HttpMethod enumeration, REST callbacks a string.
_METHODS = {
    orthanc.HttpMethod.GET: "GET",
    orthanc.HttpMethod.POST: "POST",
    orthanc.HttpMethod.PUT: "PUT",
    orthanc.HttpMethod.DELETE: "DELETE",
}

#: how often a standby Orthanc of a cluster tries to take over routing (node.intake.leader)
STANDBY_POLL_S = 2.0

_plugin = _Plugin()
orthanc.RegisterOnChangeCallback(_plugin.on_change)
orthanc.RegisterIncomingHttpRequestFilter(_plugin.allows)
if _plugin.storage is not None:
    orthanc.RegisterIncomingCStoreInstanceFilter(_plugin.filter_store)
# Orthanc takes the first registered pattern that matches: literal paths before parameters.
for _route in sorted(_plugin.routes, key=lambda route: (len(route.parameters), route.path)):
    orthanc.RegisterRestCallback(_route.pattern, _callback(_route))
