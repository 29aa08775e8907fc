"""`ai-node pipelines list|show|run`: the model author's commands, no Orthanc needed.

``run`` takes the path a worker takes, minus the network: DICOM files from a folder, the
series the pipeline accepts, :func:`~node.imaging.series.build_volume`, then the worker's own
processing chain, :func:`~node.chain.process_series` (pipeline, measurements, result objects,
validation), and writes the objects and a ``result.json`` into the output folder. With
``--job-uid`` (and ``--created``) the objects are byte for byte those a worker writes for the
job with that uid.

Also here: the ``ai-node worker`` options that choose a worker's pipelines and device.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from node.config import ResultKind, Settings, load_settings
from node.errors import ConfigurationError, InputSeriesError, PipelineError
from node.imaging.series import build_volume
from node.pipeline.base import Pipeline
from node.pipeline.registry import PipelineRegistry
from node.results.identity import ResultIdentity
from node.run.device import describe_runtime, resolve_runtime, runtime_resolver
from node.run.execution import check_input_series
from node.run.warm import WarmPipelines
from node.study.criteria import select_series
from node.study.series import SeriesSummary
from node.support.timing import StageTimer

#: the stages of `pipelines run` after reading the files, as the progress bar names them
RUN_STAGES = ("volume", "load", "chain", "write")


# --------------------------------------------------------------------------------------------
# argparse
# --------------------------------------------------------------------------------------------


def add_pipelines_command(commands: Any) -> None:
    """Add ``ai-node pipelines`` to the subcommands ``commands`` of the ``ai-node`` parser."""
    parser = commands.add_parser("pipelines", help="list, describe and run pipelines (no Orthanc needed)")
    actions = parser.add_subparsers(dest="pipelines_command", required=True)

    listing = actions.add_parser(
        "list", help="the pipelines this configuration enables (`show NAME` tells where each comes from)"
    )
    _config_option(listing)
    listing.set_defaults(handler=cmd_list)

    show = actions.add_parser("show", help="everything about one pipeline, as JSON")
    _config_option(show)
    show.add_argument("name", help="pipeline name")
    show.set_defaults(handler=cmd_show)

    run = actions.add_parser("run", help="run a pipeline on a DICOM folder and write its SEG and SR files")
    _config_option(run)
    run.add_argument("name", help="pipeline name")
    run.add_argument(
        "folder", type=Path, help="folder holding the study's DICOM files (searched recursively)"
    )
    run.add_argument("--out", type=Path, required=True, help="folder to write the result files into")
    run.add_argument(
        "--series", help="Series Instance UID to run on (default: the series the pipeline picks)"
    )
    run.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the configuration's)")
    run.add_argument(
        "--time-limit", type=float, help="seconds the pipeline may run (default: the configuration's)"
    )
    run.add_argument(
        "--job-uid",
        help="derive the result UIDs from this job uid, as the worker does (default: a new random uid)",
    )
    run.add_argument(
        "--created",
        type=_aware_datetime,
        help="creation time written into the objects, ISO 8601 with a time zone (default: now); "
        "with --job-uid, reproduces a worker's objects byte for byte",
    )
    run.set_defaults(handler=cmd_run)


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """``ai-node worker --pipelines a,b --device cuda``."""
    parser.add_argument(
        "--pipelines",
        help="comma-separated pipeline names: claim only their jobs (default: worker.pipelines)",
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: worker_device)")


def apply_worker_options(settings: Settings, args: argparse.Namespace) -> Settings:
    """``settings`` with the worker options of :func:`add_worker_options` applied."""
    pipelines = getattr(args, "pipelines", None)
    names = None
    if pipelines is not None:
        names = [name.strip() for name in pipelines.split(",") if name.strip()]
        if not names:
            raise ConfigurationError("--pipelines names no pipeline; give names separated by commas")
    return settings.with_overrides(
        **{"worker.pipelines": names, "worker_device": getattr(args, "device", None)}
    )


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML settings file (default: $AI_NODE_CONFIG or built-in defaults)")


# --------------------------------------------------------------------------------------------
# list, show
# --------------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    registry = PipelineRegistry.from_settings(settings)
    table = Table(title="Pipelines", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("version", overflow="fold")
    for column in ("accepts", "segments", "device"):
        table.add_column(column, overflow="fold")
    for cls in registry:
        accepts = cls.accepts
        table.add_row(
            cls.name,
            cls.version,
            f"{'/'.join(sorted(accepts.modalities))} ≥{accepts.min_slices} {accepts.orientation.value}",
            ", ".join(segment.label for segment in cls.segments),
            _device_text(cls, settings),
        )
    Console().print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    registry = PipelineRegistry.from_settings(settings)
    described = registry.describe(args.name)
    own = settings.for_pipeline(args.name)
    described["from"] = registry.origin(args.name)
    described["settings"] = {
        "device": own.device,
        "worker_device": settings.worker_device,
        "resolved_device": _device_text(registry.get(args.name), settings),
        "amp": own.amp,
        "time_limit_s": None if own.time_limit is None else own.time_limit.total_seconds(),
        "results": list(own.results),
    }
    print(json.dumps(described, indent=2))
    return 0


def _device_text(cls: type[Pipeline], settings: Settings) -> str:
    """What this machine would run ``cls`` on, or why it cannot."""
    own = settings.for_pipeline(cls.name)
    try:
        runtime = resolve_runtime(
            cls, pipeline_device=own.device, worker_device=settings.worker_device, amp=own.amp
        )
    except PipelineError as error:  # no GPU for a CUDA-only pipeline: shown, not raised
        return f"unavailable: {error}"
    return describe_runtime(runtime)


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.device is not None:
        settings = settings.with_overrides(worker_device=args.device)
    if args.time_limit is not None:
        own = settings.for_pipeline(args.name).model_copy(
            update={"time_limit": timedelta(seconds=args.time_limit)}
        )
        settings = settings.model_copy(
            update={"pipeline_settings": {**settings.pipeline_settings, args.name: own}}
        )
    identity = ResultIdentity.new()
    if args.job_uid is not None:
        identity = ResultIdentity.for_job(args.job_uid, args.created)
    elif args.created is not None:
        identity = ResultIdentity(identity.root, args.created)
    console = Console(stderr=True)
    summary = run_on_folder(
        settings, args.name, args.folder, args.out, series_uid=args.series, identity=identity, console=console
    )
    _print_summary(Console(), summary)
    return 0


def run_on_folder(
    settings: Settings,
    name: str,
    folder: Path,
    out: Path,
    *,
    series_uid: str | None = None,
    identity: ResultIdentity | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run pipeline ``name`` on the DICOM files under ``folder``; write the results into ``out``.

    Returns what ``result.json`` holds: the series, the pipeline's identity and device, the
    measurements, the files written and the time of each stage.
    """
    # imported here: highdicom and the result builders only once there is something to build,
    # so that `pipelines list` and `show` answer at once
    from node.chain import process_series
    from node.results.seg import DeviceInfo

    registry = PipelineRegistry.from_settings(settings)
    cls = registry.get(name)
    if not folder.is_dir():
        raise InputSeriesError(f"{folder} is not a folder of DICOM files.")
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    timer = StageTimer()
    with _progress(console) as progress:
        reading = progress.add_task("read DICOM files", total=len(files))
        datasets: list[Dataset] = []
        with timer.stage("read"):
            for path in files:
                try:
                    datasets.append(pydicom.dcmread(path))
                except (InvalidDicomError, OSError):
                    pass  # not a DICOM file (a DICOMDIR reader's index, a README…)
                progress.advance(reading)
        stages = progress.add_task("run", total=len(RUN_STAGES))
        series = _choose_series(datasets, cls, series_uid)
        first = series[0]
        check_input_series(
            cls,
            body_part=first.get("BodyPartExamined"),
            slice_thickness_mm=_float_or_none(first.get("SliceThickness")),
        )

        def stage(label: str) -> None:
            progress.update(stages, description=f"{name}: {label}")

        stage("volume")
        with timer.stage("volume"):
            volume = build_volume(series)
        progress.advance(stages)

        stage("load")
        warm = WarmPipelines(registry, runtime=runtime_resolver(settings))
        with timer.stage("load"):
            pipeline = warm.get(name)
        progress.advance(stages)

        stage(f"run on {pipeline.runtime.device}, results, validation")
        result = process_series(
            volume,
            pipeline,
            series,
            kinds=settings.for_pipeline(name).results,
            seg_type=settings.for_pipeline(name).seg_type,
            identity=identity or ResultIdentity.new(),
            device=DeviceInfo.for_node(device_serial_number=settings.orthanc.aet),
            time_limit=settings.for_pipeline(name).time_limit,
            timer=timer,
        )
        progress.advance(stages)

        stage("write")
        written = []
        with timer.stage("write"):
            out.mkdir(parents=True, exist_ok=True)
            counts = Counter(obj.kind for obj in result.objects)
            seen: Counter[ResultKind] = Counter()
            for obj in result.objects:
                seen[obj.kind] += 1
                label = obj.kind.label
                stem = label if counts[obj.kind] == 1 else f"{label}-{seen[obj.kind]:04d}"
                path = out / f"{stem}.dcm"
                obj.write(path)
                written.append(str(path))
        progress.advance(stages)

    summary: dict[str, Any] = {
        "pipeline": {
            "name": pipeline.name,
            "version": pipeline.version,
            "model_checksum": type(pipeline).model_checksum(),
            "device": pipeline.runtime.device,
            "amp": pipeline.runtime.amp,
        },
        "series_instance_uid": volume.series_instance_uid,
        "shape": list(volume.shape),
        "spacing_mm": list(volume.spacing),
        "segments": [m.to_json() for m in result.measurements],
        "files": written,
        "validator_warnings": [str(warning) for warning in result.warnings],
        "seconds": dict(timer.seconds),
    }
    (out / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _choose_series(datasets: Sequence[Dataset], cls: type[Pipeline], series_uid: str | None) -> list[Dataset]:
    by_series: dict[str, list[Dataset]] = defaultdict(list)
    for ds in datasets:
        by_series[str(ds.get("SeriesInstanceUID", ""))].append(ds)
    if not by_series:
        raise InputSeriesError("The folder holds no DICOM files.")
    if series_uid is not None:
        if series_uid not in by_series:
            raise InputSeriesError(
                f"The folder has no series {series_uid}; it has {', '.join(sorted(by_series))}."
            )
        return by_series[series_uid]
    summaries = [_summary(uid, instances) for uid, instances in by_series.items()]
    chosen = select_series(summaries, cls.accepts)
    return by_series[chosen.series_instance_uid]


def _summary(uid: str, instances: Sequence[Dataset]) -> SeriesSummary:
    first = instances[0]
    orientation = first.get("ImageOrientationPatient")
    number = first.get("SeriesNumber")
    return SeriesSummary(
        series_instance_uid=uid,
        modality=str(first.get("Modality", "")),
        instance_count=len(instances),
        image_orientation=None if orientation is None else tuple(float(v) for v in orientation),
        sop_class_uid=str(first.get("SOPClassUID")) if "SOPClassUID" in first else None,
        series_description=str(first.get("SeriesDescription", "")),
        series_number=None if number in (None, "") else int(number),
    )


def _aware_datetime(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (e.g. 2026-12-06T10:00:00+00:00)")
    return moment


def _float_or_none(value: object) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@contextmanager
def _progress(console: Console | None) -> Iterator[Progress]:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        transient=False,
        disable=console is None,
    )
    with progress:
        yield progress


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    identity = summary["pipeline"]
    console.print(
        f"{identity['name']} {identity['version']} on {identity['device']}"
        f"{' with autocast' if identity['amp'] else ''}, series {summary['series_instance_uid']}"
    )
    table = Table(title_justify="left")
    for column in ("segment", "volume (mL)", "mean", "voxels"):
        table.add_column(column, justify="left" if column == "segment" else "right")
    for segment in summary["segments"]:
        table.add_row(
            segment["label"],
            f"{segment['volume_ml']:.1f}",
            "" if segment["mean"] is None else f"{segment['mean']:.1f}",
            str(segment["voxels"]),
        )
    console.print(table)
    seconds = summary["seconds"]
    console.print("seconds: " + ", ".join(f"{stage} {value:.2f}" for stage, value in seconds.items()))
    for path in summary["files"]:
        console.print(f"wrote {path}")
