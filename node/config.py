"""The node's configuration: one validated pydantic model, read from a YAML file.

Every setting has a default, so the node runs without a file; `ai-node run --config FILE`
(or the AI_NODE_CONFIG environment variable) points at one. Unknown keys are rejected so a
typo fails at start-up instead of being silently ignored.
"""

from __future__ import annotations

import enum
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from node.errors import ConfigurationError

CONFIG_ENV = "AI_NODE_CONFIG"

# PS3.5 6.2: an AE title is at most 16 characters of the default repertoire, no backslash
# and no control characters; leading/trailing spaces are not significant.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def _valid_ae_title(value: str) -> str:
    stripped = value.strip()
    if len(stripped) > 16:
        raise ValueError(f"AE title {value!r} is {len(stripped)} characters; PS3.5 allows 16")
    if not stripped or not _AE_TITLE.match(stripped):
        raise ValueError(
            f"AE title {value!r} is not valid: PS3.5 allows 1-16 printable characters, no backslash"
        )
    return stripped


AETitle = Annotated[str, AfterValidator(_valid_ae_title)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpsSettings(_Strict):
    """HTTPS on the node's HTTP port (Orthanc's ``SslEnabled``); ``ai-node tls self-signed``
    makes a pair for a first run."""

    #: the server's certificate, PEM (a chain: the server's own first); the node's own clients
    #: connect to 127.0.0.1, so it must name IP 127.0.0.1 (the self-signed one does)
    certificate: Path
    #: its private key, PEM, unencrypted; keep it readable by the node's account only
    private_key: Path
    #: what the node's own clients (workers, CLI, viewer) trust; default: the certificate
    #: itself, which is right for a self-signed one; give the CA's file for a CA-signed one
    trusted_certificates: Path | None = None


class DicomTlsSettings(_Strict):
    """DICOM TLS on the DICOM port (PS3.15 B.1; Orthanc's ``DicomTls*``): every association
    must then use TLS."""

    certificate: Path
    private_key: Path
    #: certificates of the modalities (or their CAs) that may connect; Orthanc 1.10 needs it
    trusted_certificates: Path
    #: refuse a caller without a certificate signed by ``trusted_certificates``
    remote_certificate_required: bool = True


class AllowedCaller(_Strict):
    """A modality allowed to store into the node (``orthanc.allowed_callers``)."""

    #: its Calling AE Title
    ae_title: AETitle
    #: its address; when every caller has one, Orthanc also checks it (DicomCheckModalityHost)
    host: Annotated[str, Field(min_length=1, max_length=253)] | None = None


class OrthancSettings(_Strict):
    """How the node runs its Orthanc."""

    executable: str = "Orthanc"
    http_port: Port = 8042
    dicom_port: Port = 4242
    aet: AETitle = "AINODE"
    #: seconds without a new instance before Orthanc calls a study stable
    stable_age: timedelta = timedelta(seconds=10)
    #: serve Orthanc's HTTP (REST, DICOMweb, /ai/) to other hosts; off by default so that a
    #: new node is reachable from this machine only until its admin decides otherwise. DICOM is
    #: always open to the network. Refused together with ``authentication: false``.
    http_remote_access: bool = False
    #: Orthanc's basic authentication with the users of ``DATA_DIR/credentials.json``; turn it
    #: off only behind an authenticating reverse proxy on this machine (the admin/viewer roles
    #: then no longer apply: every request is treated as an admin's, CSRF checks stay on)
    authentication: bool = True
    plugin_folder: Path = Path("/usr/share/orthanc/plugins")
    #: seconds to wait for Orthanc to answer after start
    start_timeout: timedelta = timedelta(seconds=60)
    #: HTTPS instead of HTTP on ``http_port``
    https: HttpsSettings | None = None
    #: DICOM TLS instead of plain DICOM on ``dicom_port``
    dicom_tls: DicomTlsSettings | None = None
    #: only these modalities may store (C-STORE); None: any
    allowed_callers: list[AllowedCaller] | None = None
    #: C-STOREs are refused (status A700, out of resources) once Orthanc's storage holds this
    #: much, e.g. ``500GB``; nothing is ever deleted to make room. None: no limit
    max_storage_size: ByteSize | None = None

    @model_validator(mode="after")
    def _no_open_remote_access(self) -> OrthancSettings:
        if self.http_remote_access and not self.authentication:
            raise ValueError(
                "http_remote_access: true with authentication: false would let anyone on the "
                "network read and change everything; keep authentication on, or remote access "
                "off (an authenticating reverse proxy on this machine reaches the node locally)"
            )
        return self

    @model_validator(mode="after")
    def _hosts_for_all_callers_or_none(self) -> OrthancSettings:
        callers = self.allowed_callers or []
        with_host = [caller for caller in callers if caller.host]
        if with_host and len(with_host) != len(callers):
            raise ValueError(
                "allowed_callers: give a host for every caller or for none (Orthanc checks "
                "hosts for all modalities or for none)"
            )
        return self


class ClusterOrthancSettings(_Strict):
    """How the workers of a host that runs no Orthanc reach the cluster's (``cluster.orthanc``):
    docs/scaling.md. A host that runs Orthanc reaches its own at 127.0.0.1."""

    #: the Orthancs' base URLs (http:// or https://), tried in turn when one does not answer;
    #: one behind a load balancer is enough
    urls: Annotated[list[Annotated[str, Field(pattern=r"^https?://[^/\s]+")]], Field(min_length=1)]
    #: a user with the ``worker`` role on those Orthancs (``ai-node users add NAME --role worker``
    #: on an Orthanc host), and the file holding its password (mode 600)
    user: str
    password_file: Path
    #: for https URLs: the certificates to trust (the Orthancs' own, or their CA); default: the
    #: system's CAs
    trusted_certificates: Path | None = None


class PostgresIndexSettings(_Strict):
    """Orthanc's index and storage in PostgreSQL (Debian ``orthanc-postgresql``), so that
    several Orthancs serve one archive and no host needs a shared disk."""

    host: str = "127.0.0.1"
    port: Port = 5432
    database: str
    user: str
    #: the file holding the user's password (mode 600); None: no password (trust, or a socket)
    password_file: Path | None = None
    #: DICOM files in PostgreSQL too (large objects); False keeps them in DATA_DIR, which then
    #: must be shared between the Orthancs
    storage: bool = True


class ClusterSettings(_Strict):
    """What a host of a multi-host node runs and how it reaches the others (docs/scaling.md)."""

    #: ``all`` (one machine: Orthanc and workers), ``orthanc`` (Orthanc with the plug-in, no
    #: workers), ``worker`` (workers only; needs ``orthanc`` below and a PostgreSQL
    #: ``database_url``); ``ai-node run --role`` overrides it
    role: Literal["all", "orthanc", "worker"] = "all"
    #: for a worker host: the cluster's Orthancs
    orthanc: ClusterOrthancSettings | None = None
    #: for an Orthanc host of a cluster: the index and storage every Orthanc shares
    orthanc_index: PostgresIndexSettings | None = None


class WorkerSettings(_Strict):
    count: Annotated[int, Field(ge=0, le=64)] = 1
    #: a job whose worker stopped heartbeating is claimed again after this long
    lease: timedelta = timedelta(seconds=60)
    poll_interval: timedelta = timedelta(seconds=0.5)
    #: parallel downloads of one series' instances from Orthanc
    fetch_threads: Annotated[int, Field(ge=1, le=32)] = 4
    #: restrict a worker to these pipelines (None: all enabled ones)
    pipelines: list[str] | None = None
    #: while this many jobs are queued, new studies wait in Orthanc until room frees (nothing is
    #: dropped; GET /ai/health shows it); None: no limit
    max_queued_jobs: Annotated[int, Field(ge=1)] | None = None


class ResultKind(enum.StrEnum):
    """A kind of result object a job can produce (``pipeline_settings.NAME.results``)."""

    #: the DICOM SEG with the masks
    SEG = "seg"
    #: the volumetric TID 1500 SR, one group per SEG segment (needs SEG)
    SR = "sr"
    #: the planar TID 1500 SR, one outline per segment, which OHIF 3.13 draws
    PLANAR_SR = "planar-sr"
    #: RGB images with the segments burned in, for PACS that show no SEG
    SECONDARY_CAPTURE = "secondary-capture"

    @property
    def label(self) -> str:
        """How messages, job results' file names and logs name it: ``SEG``, ``PLANAR-SR``."""
        return self.value.upper()


class SegmentationKind(enum.StrEnum):
    """How a SEG stores its segments (Segmentation Type, PS3.3 C.8.20.2)."""

    #: one bit per voxel, one frame per non-empty (segment, slice): what OHIF 3.13 shows right
    BINARY = "binary"
    #: one frame per slice holding segment numbers (Supplement 243): smaller, but OHIF 3.13
    #: shows it with shifted colours; segments that overlap are written BINARY regardless
    LABELMAP = "labelmap"


def result_kinds_problem(kinds: list[ResultKind]) -> str | None:
    """Why a list of result objects cannot be built, or None when it can."""
    if not kinds:
        return (
            "results lists no result object; a job would store nothing "
            "(choose from 'seg', 'sr', 'planar-sr', 'secondary-capture')"
        )
    if ResultKind.SR in kinds and ResultKind.SEG not in kinds:
        return "result 'sr' references the SEG's segments: list 'seg' too"
    return None


def _valid_result_kinds(kinds: list[ResultKind]) -> list[ResultKind]:
    problem = result_kinds_problem(kinds)
    if problem:
        raise ValueError(problem)
    return kinds


#: where a pipeline runs: ``auto`` (CUDA when there is a GPU and the pipeline can use it),
#: ``cpu``, ``cuda`` (the first GPU, or the worker's) or ``cuda:N``
DeviceSetting = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")]
#: a pipeline name as the registry accepts it (it appears in URLs, file names and job rows)
PipelineName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


class TorchScriptModelSettings(_Strict):
    """A TorchScript model registered as a pipeline, under ``models:`` (docs/pipelines.md)."""

    type: Literal["torchscript"]
    #: the pipeline's name; the descriptor's ``name`` must be the same
    name: PipelineName
    #: the YAML or JSON descriptor: segments, codes, colours, input, inference
    descriptor: Path
    #: the TorchScript file; default: the descriptor's ``model``, relative to the descriptor
    weights: Path | None = None


class MonaiBundleSettings(_Strict):
    """A MONAI bundle folder registered as a pipeline, under ``models:`` (docs/pipelines.md)."""

    type: Literal["monai-bundle"]
    #: the pipeline's name; the descriptor's ``name`` must be the same
    name: PipelineName
    #: the bundle folder: configs/metadata.json, configs/inference.json (or .yaml), models/
    path: Path
    #: the node's descriptor of the bundle; default: ``PATH/configs/ai-node.yaml``
    descriptor: Path | None = None
    #: the weights; default: ``PATH/models/model.ts``, else ``PATH/models/model.pt``
    weights: Path | None = None


ModelSettings = Annotated[TorchScriptModelSettings | MonaiBundleSettings, Field(discriminator="type")]


class PipelineSettings(_Strict):
    """Settings of one pipeline, under ``pipeline_settings: {NAME: {...}}``."""

    #: the device it runs on; ``auto`` follows the worker (``worker_device``)
    device: DeviceSetting = "auto"
    #: automatic mixed precision on CUDA, for pipelines that allow it
    amp: bool = True
    #: a run that takes longer fails its job, and the worker restarts; ``null``: no limit
    time_limit: timedelta | None = timedelta(minutes=30)

    #: result objects the node writes for this pipeline's jobs; the SR carries the outlines
    #: viewers draw, so the planar SR (the same outlines without the SEG) is for archives
    #: that want one
    results: Annotated[list[ResultKind], AfterValidator(_valid_result_kinds)] = [
        ResultKind.SEG,
        ResultKind.SR,
    ]
    #: the SEG's Segmentation Type; BINARY is what OHIF 3.13 shows with the right colours
    seg_type: SegmentationKind = SegmentationKind.BINARY


def _positive_duration(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"duration {value.total_seconds():g} s must be more than 0 s")
    return value


PositiveDuration = Annotated[timedelta, AfterValidator(_positive_duration)]


class RetrySettings(_Strict):
    """How something that failed is tried again (see :mod:`node.support.retry`)."""

    #: attempts, the first included, before it stays failed until someone retries it
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    #: delay after the first failure; each further failure multiplies it by ``factor``
    base_delay: PositiveDuration = timedelta(seconds=30)
    factor: Annotated[float, Field(ge=1, le=10)] = 2
    max_delay: PositiveDuration = timedelta(hours=1)

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetrySettings:
        # next_attempt_delay refuses such a schedule: caught here, it fails at start-up rather
        # than at the first failed delivery, inside the worker's loop
        if self.max_delay < self.base_delay:
            raise ValueError(
                f"max_delay {self.max_delay.total_seconds():g} s is less than base_delay "
                f"{self.base_delay.total_seconds():g} s"
            )
        return self


class DeliveryRetrySettings(RetrySettings):
    """How failed deliveries of results are retried: a PACS that is down for a while."""


class IntakeSettings(RetrySettings):
    """How a study whose routing failed is retried (:mod:`node.intake.recovery`), and when the
    change follower counts as behind. A study that fails for a lasting reason (deleted, a
    value the job table refuses) is set aside at once; one that fails because Orthanc or the
    database is busy is tried again on this schedule, then set aside. Either way the studies
    after it are routed."""

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 6
    base_delay: PositiveDuration = timedelta(seconds=5)
    max_delay: PositiveDuration = timedelta(minutes=10)
    #: /ai/health is unhealthy while the oldest change the follower has not handled is older
    max_lag: PositiveDuration = timedelta(minutes=5)


class Settings(_Strict):
    """Everything the node needs to run."""

    #: where the node keeps Orthanc's storage, the job database, logs and the runtime config
    data_dir: Path = Path("var")
    #: SQLAlchemy URL of the job database; default: a SQLite file in data_dir
    database_url: str | None = None
    #: the key that encrypts destinations' passwords and tokens in the job database; created on
    #: first use; default: DATA_DIR/secrets.key. Every host sharing a database needs the same.
    secrets_key_file: Path | None = None
    orthanc: OrthancSettings = OrthancSettings()
    worker: WorkerSettings = WorkerSettings()
    #: pipelines to enable by name (None: every registered pipeline)
    pipelines: list[str] | None = None
    #: models registered from files rather than entry points (TorchScript, MONAI bundles)
    models: list[ModelSettings] = []
    #: device of this node's workers (auto, cpu, cuda, cuda:N); ``ai-node worker --device``
    #: sets it for one worker, ``pipeline_settings.NAME.device`` for one pipeline
    worker_device: DeviceSetting = "auto"
    #: per-pipeline settings by pipeline name; a pipeline not listed uses the defaults
    pipeline_settings: dict[str, PipelineSettings] = {}
    #: retries of deliveries to destinations that fail (a PACS that is down)
    delivery: DeliveryRetrySettings = DeliveryRetrySettings()
    #: retries of studies whose routing failed, and the follower's allowed lag
    intake: IntakeSettings = IntakeSettings()
    #: several hosts: which processes this one runs, how workers reach Orthanc, the shared index
    cluster: ClusterSettings = ClusterSettings()
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _a_worker_host_reaches_the_cluster(self) -> Settings:
        if self.cluster.role != "worker":
            return self
        problems = []
        if self.cluster.orthanc is None:
            problems.append("cluster.orthanc (the Orthancs' URLs, and a user with the worker role)")
        if not (self.database_url or "").startswith("postgresql"):
            problems.append("a PostgreSQL database_url (the job database every host shares)")
        if problems:
            raise ValueError("cluster.role worker (a host without Orthanc) needs " + " and ".join(problems))
        return self

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'jobs.sqlite'}"

    @property
    def resolved_secrets_key_file(self) -> Path:
        if self.secrets_key_file is not None:
            return self.secrets_key_file.expanduser().resolve()
        return self.resolved_data_dir / "secrets.key"

    def for_pipeline(self, name: str) -> PipelineSettings:
        return self.pipeline_settings.get(name, PipelineSettings())

    @property
    def orthanc_urls(self) -> list[str]:
        """Where this host's workers and commands reach Orthanc: the cluster's Orthancs for a
        worker host, else this host's own."""
        if self.cluster.role == "worker" and self.cluster.orthanc is not None:
            return [url.rstrip("/") for url in self.cluster.orthanc.urls]
        return [self.local_orthanc_url]

    @property
    def orthanc_url(self) -> str:
        return self.orthanc_urls[0]

    @property
    def local_orthanc_url(self) -> str:
        """This host's own Orthanc (which a worker host does not run)."""
        scheme = "http" if self.orthanc.https is None else "https"
        return f"{scheme}://127.0.0.1:{self.orthanc.http_port}"

    @property
    def orthanc_trust(self) -> str | bool:
        """What the node's own HTTPS clients verify its certificate against (requests'
        ``verify``): the file configured, never "don't verify"."""
        if self.cluster.role == "worker" and self.cluster.orthanc is not None:
            trusted = self.cluster.orthanc.trusted_certificates
            return True if trusted is None else str(trusted)
        https = self.orthanc.https
        if https is None:
            return True
        return str(https.trusted_certificates or https.certificate)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some values replaced; nested values by dotted name (``orthanc.http_port``)."""
        data = self.model_dump()
        for dotted, value in changes.items():
            if value is None:
                continue
            target = data
            *parents, leaf = dotted.split(".")
            for parent in parents:
                target = target[parent]
            target[leaf] = value
        return _validate(data, "command-line options")


def _validate(data: dict[str, Any], source: str) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in error.errors()
        )
        raise ConfigurationError(f"invalid configuration in {source}: {problems}") from error


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the settings from ``path``, or $AI_NODE_CONFIG, or use the defaults."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return Settings()
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(f"configuration file {file} does not exist")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigurationError(f"configuration file {file} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigurationError(f"configuration file {file} must hold a mapping of settings")
    settings = _validate(data, str(file))
    # A relative data folder is relative to the file, so the same file works from any cwd.
    if not settings.data_dir.is_absolute():
        settings = settings.model_copy(update={"data_dir": (file.parent / settings.data_dir)})
    return _anchor_security_files(settings, file.parent)


def _anchor_security_files(settings: Settings, base: Path) -> Settings:
    """Relative certificate, key and secrets-key paths are relative to the file too (Orthanc
    runs in the data folder, the workers read a copy of the settings written there)."""

    def anchored(model: BaseModel | None) -> dict[str, Any] | None:
        if model is None:
            return None
        return {
            name: (base / value if isinstance(value, Path) and not value.is_absolute() else value)
            for name, value in model
        }

    orthanc = settings.orthanc.model_dump()
    orthanc["https"] = anchored(settings.orthanc.https)
    orthanc["dicom_tls"] = anchored(settings.orthanc.dicom_tls)
    key = settings.secrets_key_file
    return settings.model_copy(
        update={
            "orthanc": OrthancSettings.model_validate(orthanc),
            "secrets_key_file": base / key if key is not None and not key.is_absolute() else key,
        }
    )


def dump_settings(settings: Settings) -> str:
    """YAML for a settings object, as read back by :func:`load_settings`."""
    data = settings.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)
