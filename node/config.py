"""The node's configuration: one validated pydantic model, read from a YAML file.

Every setting has a default, so the node runs without a file; `ai-node run --config FILE`
(or the AI_NODE_CONFIG environment variable) points at one. Unknown keys are rejected so a
typo fails at start-up instead of being silently ignored.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

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


class OrthancSettings(_Strict):
    """How the node runs its Orthanc."""

    executable: str = "Orthanc"
    http_port: Port = 8042
    dicom_port: Port = 4242
    aet: AETitle = "AINODE"
    #: seconds without a new instance before Orthanc calls a study stable
    stable_age: timedelta = timedelta(seconds=10)
    #: serve Orthanc's HTTP (REST, DICOMweb, /ai/) to other hosts; off by default because
    #: authentication comes with the admin console. DICOM is always open to the network.
    http_remote_access: bool = False
    plugin_folder: Path = Path("/usr/share/orthanc/plugins")
    #: seconds to wait for Orthanc to answer after start
    start_timeout: timedelta = timedelta(seconds=60)


class WorkerSettings(_Strict):
    count: Annotated[int, Field(ge=0, le=64)] = 1
    #: a job whose worker stopped heartbeating is claimed again after this long
    lease: timedelta = timedelta(seconds=60)
    poll_interval: timedelta = timedelta(seconds=0.5)
    #: parallel downloads of one series' instances from Orthanc
    fetch_threads: Annotated[int, Field(ge=1, le=32)] = 4
    #: restrict a worker to these pipelines (None: all enabled ones)
    pipelines: list[str] | None = None


ResultKind = Literal["seg", "sr"]


class PipelineSettings(_Strict):
    """Settings of one pipeline, under ``pipeline_settings: {NAME: {...}}``."""

    #: result objects the node writes for this pipeline's jobs
    results: list[ResultKind] = ["seg", "sr"]


class Settings(_Strict):
    """Everything the node needs to run."""

    #: where the node keeps Orthanc's storage, the job database, logs and the runtime config
    data_dir: Path = Path("var")
    #: SQLAlchemy URL of the job database; default: a SQLite file in data_dir
    database_url: str | None = None
    orthanc: OrthancSettings = OrthancSettings()
    worker: WorkerSettings = WorkerSettings()
    #: pipelines to enable by name (None: every registered pipeline)
    pipelines: list[str] | None = None
    #: per-pipeline settings by pipeline name; a pipeline not listed uses the defaults
    pipeline_settings: dict[str, PipelineSettings] = {}
    log_level: str = "INFO"

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'jobs.sqlite'}"

    def for_pipeline(self, name: str) -> PipelineSettings:
        return self.pipeline_settings.get(name, PipelineSettings())

    @property
    def orthanc_url(self) -> str:
        return f"http://127.0.0.1:{self.orthanc.http_port}"

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
    return settings


def dump_settings(settings: Settings) -> str:
    """YAML for a settings object, as read back by :func:`load_settings`."""
    data = settings.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)
