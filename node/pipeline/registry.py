"""Finding pipelines through the ``ai_node.pipelines`` entry-point group, and keeping them warm.

Pipelines come from two places. A distribution registers a pipeline class in its packaging
metadata::

    [options.entry_points]
    ai_node.pipelines =
        my-model = my_package.pipeline:MyModel

The entry point's name must equal the class's :attr:`~node.pipeline.base.Pipeline.name`. The
built-in pipelines are registered the same way in this project's ``setup.cfg``. And the
configuration's ``models:`` list registers model files: a TorchScript file with a descriptor
(:mod:`node.pipeline.torchscript`) or a MONAI bundle folder (:mod:`node.pipeline.monai_bundle`), each
made into a pipeline class. :meth:`PipelineRegistry.from_settings` takes both.

:class:`PipelineRegistry` imports and checks the classes (a process that only lists pipelines,
such as the Orthanc plugin, never instantiates them nor imports torch); a worker keeps the
instances it has loaded in :class:`node.run.warm.WarmPipelines`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

from node.errors import PipelineError
from node.pipeline.base import (
    Code,
    DeviceKind,
    InputSpec,
    IntensityWindow,
    IntensityZScore,
    Pipeline,
    SegmentSpec,
    SeriesCriteria,
)

if TYPE_CHECKING:
    from node.config import ModelSettings, Settings

ENTRY_POINT_GROUP = "ai_node.pipelines"

#: pipeline names appear in URLs, file names and job rows
_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class PipelineRegistry:
    """The pipeline classes known to this node, by name; every one checked on the way in."""

    def __init__(
        self, pipelines: Iterable[type[Pipeline]], *, origins: Mapping[str, str] | None = None
    ) -> None:
        self._pipelines: dict[str, type[Pipeline]] = {}
        self._origins: dict[str, str] = dict(origins or {})
        for cls in pipelines:
            check_pipeline_class(cls)
            if cls.name in self._pipelines:
                other = self._pipelines[cls.name]
                raise PipelineError(
                    f"Two pipelines are named '{cls.name}': {_qualname(other)} and "
                    f"{_qualname(cls)}; pipeline names must be unique."
                )
            self._pipelines[cls.name] = cls

    @classmethod
    def from_entry_points(
        cls, group: str = ENTRY_POINT_GROUP, enabled: Collection[str] | None = None
    ) -> PipelineRegistry:
        """Load the pipelines installed in ``group``; only those in ``enabled`` when given."""
        return cls.from_entry_point_list(metadata.entry_points(group=group), enabled=enabled)

    @classmethod
    def from_entry_point_list(
        cls,
        entry_points: Iterable[metadata.EntryPoint],
        *,
        enabled: Collection[str] | None = None,
    ) -> PipelineRegistry:
        """Load the pipeline classes ``entry_points`` point at.

        Entry points whose name is not in ``enabled`` are not imported at all, so a broken
        third-party pipeline that is switched off cannot stop the node.
        """
        by_name = _select(entry_points, enabled)
        if enabled is not None:
            missing = sorted(set(enabled) - set(by_name))
            if missing:
                raise PipelineError(
                    f"Enabled pipeline(s) {', '.join(repr(n) for n in missing)} are not "
                    f"installed; installed and enabled: {_listing(by_name)}."
                )
        return cls(
            (_load(entry_point) for entry_point in by_name.values()),
            origins={name: _entry_point_origin(ep) for name, ep in by_name.items()},
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        entry_points: Iterable[metadata.EntryPoint] | None = None,
    ) -> PipelineRegistry:
        """The node's pipelines: installed entry points and the configuration's ``models:``.

        ``settings.pipelines`` (when set) names the enabled ones among both; entry points and
        models it does not name are not even imported or read. A name used twice, by two
        models or by a model and an entry point, is an error.
        """
        enabled = settings.pipelines
        models: dict[str, ModelSettings] = {}
        for model in settings.models:
            if model.name in models:
                raise PipelineError(
                    f"Two entries of models: are named '{model.name}'; pipeline names must be unique."
                )
            models[model.name] = model
        if enabled is not None:
            models = {name: model for name, model in models.items() if name in enabled}
        installed = metadata.entry_points(group=ENTRY_POINT_GROUP) if entry_points is None else entry_points
        by_name = _select(installed, None if enabled is None else set(enabled) - set(models))
        if enabled is not None:
            missing = sorted(set(enabled) - set(by_name) - set(models))
            if missing:
                raise PipelineError(
                    f"Enabled pipeline(s) {', '.join(repr(n) for n in missing)} are neither installed "
                    f"nor configured under models:; available and enabled: {_listing({**by_name, **models})}."
                )
        clash = sorted(set(by_name) & set(models))
        if clash:
            raise PipelineError(
                f"Pipeline name(s) {', '.join(repr(n) for n in clash)} are both an installed entry "
                f"point ({', '.join(_entry_point_origin(by_name[n]) for n in clash)}) and an entry of "
                "models:; pipeline names must be unique."
            )
        classes = [_load(entry_point) for entry_point in by_name.values()]
        origins = {name: _entry_point_origin(ep) for name, ep in by_name.items()}
        for name, model in models.items():
            made = model_pipeline(model)
            classes.append(made)
            origins[name] = str(getattr(made, "source", model.type))
        return cls(classes, origins=origins)

    def names(self) -> list[str]:
        return sorted(self._pipelines)

    def get(self, name: str) -> type[Pipeline]:
        try:
            return self._pipelines[name]
        except KeyError:
            raise PipelineError(
                f"No pipeline is named '{name}'; known pipelines: {_listing(self._pipelines)}."
            ) from None

    def __iter__(self) -> Iterator[type[Pipeline]]:
        return iter([self._pipelines[name] for name in self.names()])

    def __len__(self) -> int:
        return len(self._pipelines)

    def __contains__(self, name: object) -> bool:
        return name in self._pipelines

    def origin(self, name: str) -> str:
        """Where pipeline ``name`` comes from: a distribution's entry point or a model file."""
        cls = self.get(name)
        return self._origins.get(name) or str(getattr(cls, "source", "") or _qualname(cls))

    def describe(self, name: str) -> dict[str, Any]:
        """A JSON-ready description of pipeline ``name`` (``GET /ai/pipelines``)."""
        cls = self.get(name)
        accepts = cls.accepts
        return {
            "name": cls.name,
            "version": cls.version,
            "description": cls.description,
            "model_checksum": cls.model_checksum(),
            "accepts": {
                "modalities": sorted(accepts.modalities),
                "min_slices": accepts.min_slices,
                "orientation": accepts.orientation.value,
                "body_parts": sorted(accepts.body_parts),
                "slice_thickness_mm": None
                if accepts.slice_thickness_mm is None
                else list(accepts.slice_thickness_mm),
            },
            "input": _describe_input(cls.input),
            "devices": sorted(kind.value for kind in cls.devices),
            "amp": cls.amp,
            "segments": [_describe_segment(segment) for segment in cls.segments],
        }


def check_pipeline_class(cls: object) -> None:
    """Raise :class:`PipelineError` unless ``cls`` is a complete :class:`Pipeline` subclass."""
    if not (inspect.isclass(cls) and issubclass(cls, Pipeline)):
        raise PipelineError(f"{cls!r} is not a subclass of node.pipeline.base.Pipeline.")
    where = _qualname(cls)
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise PipelineError(
            f"Pipeline {where} has name {name!r}; a pipeline name is 1 to 64 lower-case "
            "letters, digits, '.', '_' or '-', starting with a letter or digit."
        )
    version = getattr(cls, "version", None)
    if not isinstance(version, str) or not version:
        raise PipelineError(
            f"Pipeline '{name}' ({where}) has version {version!r}; it must declare a non-empty string."
        )
    description = getattr(cls, "description", None)
    if not isinstance(description, str):
        raise PipelineError(
            f"Pipeline '{name}' ({where}) has description {description!r}; it must declare a string."
        )
    accepts = getattr(cls, "accepts", None)
    if not isinstance(accepts, SeriesCriteria):
        raise PipelineError(
            f"Pipeline '{name}' ({where}) has accepts {accepts!r}; it must declare a SeriesCriteria."
        )
    segments = getattr(cls, "segments", None)
    if (
        not isinstance(segments, tuple)
        or not segments
        or not all(isinstance(segment, SegmentSpec) for segment in segments)
    ):
        raise PipelineError(
            f"Pipeline '{name}' ({where}) has segments {segments!r}; it must declare a "
            "non-empty tuple of SegmentSpec."
        )
    labels = [segment.label for segment in segments]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise PipelineError(
            f"Pipeline '{name}' ({where}) declares segment label(s) "
            f"{', '.join(repr(d) for d in duplicates)} more than once; labels must be unique."
        )
    for segment in segments:
        _check_segment(name, segment)
    if not isinstance(getattr(cls, "input", None), InputSpec):
        raise PipelineError(
            f"Pipeline '{name}' ({where}) has input {getattr(cls, 'input', None)!r}; it must be an InputSpec."
        )
    devices = getattr(cls, "devices", None)
    if not (isinstance(devices, frozenset) and devices and all(isinstance(d, DeviceKind) for d in devices)):
        raise PipelineError(
            f"Pipeline '{name}' ({where}) has devices {devices!r}; it must be a non-empty frozenset "
            "of DeviceKind."
        )
    if not isinstance(getattr(cls, "amp", None), bool):
        raise PipelineError(
            f"Pipeline '{name}' ({where}) has amp {getattr(cls, 'amp', None)!r}; it must be a bool."
        )
    if inspect.isabstract(cls):
        raise PipelineError(f"Pipeline '{name}' ({where}) does not implement run().")


def _check_segment(pipeline: str, segment: SegmentSpec) -> None:
    if not segment.label or len(segment.label) > 64:
        raise PipelineError(
            f"Pipeline '{pipeline}' has segment label {segment.label!r}; Segment Label "
            "(0062,0005) is LO, 1 to 64 characters."
        )
    for role, code in (("category", segment.category), ("type", segment.type)):
        if not (isinstance(code, Code) and code.value and code.scheme and code.meaning):
            raise PipelineError(
                f"Pipeline '{pipeline}' segment '{segment.label}' has {role} {code!r}; it "
                "must be a Code with value, scheme and meaning."
            )
    rgb = segment.rgb
    if not (
        isinstance(rgb, tuple) and len(rgb) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in rgb)
    ):
        raise PipelineError(
            f"Pipeline '{pipeline}' segment '{segment.label}' has rgb {rgb!r}; it must be "
            "three integers from 0 to 255."
        )


def _load(entry_point: metadata.EntryPoint) -> type[Pipeline]:
    try:
        loaded = entry_point.load()
    except Exception as exc:  # third-party import code can raise anything
        raise PipelineError(
            f"Pipeline entry point '{entry_point.name} = {entry_point.value}' of "
            f"{_origin(entry_point)} could not be imported: {type(exc).__name__}: {exc}"
        ) from exc
    if not (inspect.isclass(loaded) and issubclass(loaded, Pipeline)):
        raise PipelineError(
            f"Pipeline entry point '{entry_point.name} = {entry_point.value}' of "
            f"{_origin(entry_point)} points at {loaded!r}, which is not a subclass of "
            "node.pipeline.base.Pipeline."
        )
    check_pipeline_class(loaded)
    if loaded.name != entry_point.name:
        raise PipelineError(
            f"Pipeline entry point '{entry_point.name}' of {_origin(entry_point)} points at "
            f"{_qualname(loaded)}, whose name is '{loaded.name}'; the two must be equal."
        )
    return loaded


def model_pipeline(model: ModelSettings) -> type[Pipeline]:
    """The pipeline class of one ``models:`` entry (reads its descriptor, hashes its weights)."""
    if model.type == "torchscript":
        from node.pipeline.torchscript import torchscript_pipeline

        return torchscript_pipeline(model)
    from node.pipeline.monai_bundle import monai_bundle_pipeline

    return monai_bundle_pipeline(model)


def _select(
    entry_points: Iterable[metadata.EntryPoint], enabled: Collection[str] | None
) -> dict[str, metadata.EntryPoint]:
    by_name: dict[str, metadata.EntryPoint] = {}
    for entry_point in entry_points:
        if enabled is not None and entry_point.name not in enabled:
            continue
        if entry_point.name in by_name:
            raise PipelineError(
                f"Pipeline entry point '{entry_point.name}' is registered twice: by "
                f"{_origin(by_name[entry_point.name])} and by {_origin(entry_point)}; "
                "pipeline names must be unique."
            )
        by_name[entry_point.name] = entry_point
    return by_name


def _entry_point_origin(entry_point: metadata.EntryPoint) -> str:
    return f"entry point {entry_point.value} of {_origin(entry_point)}"


def _describe_input(spec: InputSpec) -> dict[str, Any]:
    intensity: dict[str, Any] | None = None
    if isinstance(spec.intensity, IntensityWindow):
        intensity = {
            "type": "window",
            "lower": spec.intensity.lower,
            "upper": spec.intensity.upper,
            "out_min": spec.intensity.out_min,
            "out_max": spec.intensity.out_max,
        }
    elif isinstance(spec.intensity, IntensityZScore):
        intensity = {"type": "zscore", "nonzero": spec.intensity.nonzero}
    return {
        "orientation": spec.orientation,
        "spacing": None if spec.spacing is None else list(spec.spacing),
        "intensity": intensity,
    }


def _describe_segment(segment: SegmentSpec) -> dict[str, Any]:
    return {
        "label": segment.label,
        "category": _describe_code(segment.category),
        "type": _describe_code(segment.type),
        "rgb": list(segment.rgb),
        "measurements": [measurement.value for measurement in segment.measurements],
        "description": segment.description,
    }


def _describe_code(code: Code) -> dict[str, str]:
    return {"value": code.value, "scheme": code.scheme, "meaning": code.meaning}


def _origin(entry_point: metadata.EntryPoint) -> str:
    dist = entry_point.dist
    if dist is None:
        return "an unknown distribution"
    return f"distribution '{dist.name} {dist.version}'"


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _listing(names: Mapping[str, object]) -> str:
    return ", ".join(repr(name) for name in sorted(names)) or "none"
