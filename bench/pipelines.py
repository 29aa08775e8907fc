"""Pipeline benchmark: the first study in a fresh worker process against the next ones.

For each pipeline a fresh Python process (as a worker after start or restart) builds the
registry, loads the pipeline (:class:`~node.run.warm.WarmPipelines`) and runs three
studies; each study is what a worker does between building the volume and staging the
results: the processing chain :func:`~node.chain.process_series` (resampling, device,
inference, measurements, SEG and SR, validation). The first study pays imports and
``load()``; the next ones find the model warm. Each process is repeated ``--runs`` times; the
table gives min / median.

Pipelines: the two built-ins on their sample series, and the test suite's tiny bone U-Net
as a TorchScript file with a descriptor and as a MONAI bundle folder (tests/fixtures/models.py),
so the adapters' own overhead shows. CUDA rows run when torch sees a GPU, and are marked
skipped otherwise.

    .venv/bin/python bench/pipelines.py --runs 3 --write docs/benchmarks-pipelines.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_description, python_description  # noqa: E402

#: (pipeline, sample series)
PIPELINES = (
    ("ct-tissue", "ct"),
    ("brain-extraction", "mr"),
    ("ct-bone-ts", "ct"),
    ("ct-bone-bundle", "ct"),
)
STUDIES = 3


def child(args: argparse.Namespace) -> None:
    """One fresh worker-like process: print the timings of load and three studies as JSON."""
    started = time.perf_counter()
    import pydicom

    from node.chain import process_series
    from node.config import ResultKind, load_settings
    from node.imaging.series import build_volume
    from node.pipeline.registry import PipelineRegistry
    from node.results.identity import ResultIdentity
    from node.results.seg import DeviceInfo
    from node.run.device import runtime_resolver
    from node.run.warm import WarmPipelines
    from node.support.timing import StageTimer

    datasets = [pydicom.dcmread(p) for p in sorted(Path(args.series).iterdir()) if p.is_file()]
    volume = build_volume(datasets)
    settings = load_settings(args.config).with_overrides(worker_device=args.device)
    node_imports = time.perf_counter() - started

    started = time.perf_counter()
    registry = PipelineRegistry.from_settings(settings)
    warm = WarmPipelines(registry, runtime=runtime_resolver(settings))
    pipeline = warm.get(args.child)
    load = time.perf_counter() - started

    studies = []
    for n in range(STUDIES):
        timer = StageTimer()
        started = time.perf_counter()
        process_series(
            volume,
            pipeline,
            datasets,
            kinds=[ResultKind.SEG, ResultKind.SR],
            identity=ResultIdentity.new(),
            device=DeviceInfo.for_node(device_serial_number="BENCH"),
            timer=timer,
        )
        studies.append(
            {"study": time.perf_counter() - started, "pipeline": timer.seconds["pipeline"], "n": n}
        )
    print(
        json.dumps(
            {
                "node_imports": node_imports,
                "load": load,
                "studies": studies,
                "device": pipeline.runtime.device,
                "version": pipeline.version,
            }
        )
    )


def prepare_models(workdir: Path) -> Path:
    """The TorchScript model and the MONAI bundle, written from the test suite's bone U-Net."""
    import yaml

    from tests.fixtures.models import trained_bone_state, write_monai_bundle, write_torchscript_model
    from tests.requirements import sample_series

    state = trained_bone_state(sample_series("ct"))
    descriptor = write_torchscript_model(workdir / "ts", state)
    bundle = write_monai_bundle(workdir / "bundle", state)
    config = workdir / "node.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"type": "torchscript", "name": "ct-bone-ts", "descriptor": str(descriptor)},
                    {"type": "monai-bundle", "name": "ct-bone-bundle", "path": str(bundle)},
                ],
                "pipeline_settings": {name: {"time_limit": None} for name, _ in PIPELINES},
            }
        )
    )
    return config


def measure(name: str, series: Path, config: Path, device: str) -> dict:
    command = [sys.executable, __file__, "--child", name, "--series", str(series), "--config", str(config)]
    command += ["--device", device]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} on {device} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu_description()}, {gpu}; {python_description()}, torch {torch.__version__}"


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per pipeline and device")
    parser.add_argument("--write", type=Path, help="write the Markdown report here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--series", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from tests.requirements import sample_series

    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pipelines-") as workdir:
        config = prepare_models(Path(workdir))
        for device in ("cpu", "cuda"):
            for name, sample in PIPELINES:
                if device == "cuda" and name == "ct-tissue":
                    rows.append(f"| {name} | cuda | n/a: rule-based, runs on the CPU only | | | | |")
                    continue
                if device == "cuda" and not cuda_available():
                    rows.append(
                        f"| {name} | cuda | skipped: torch sees no CUDA device on this machine | | | | |"
                    )
                    continue
                results = [measure(name, sample_series(sample), config, device) for _ in range(args.runs)]
                first = [r["load"] + r["studies"][0]["study"] for r in results]
                warm = [s["study"] for r in results for s in r["studies"][1:]]
                rows.append(
                    f"| {name} | {results[0]['device']} | {spread([r['node_imports'] for r in results])} "
                    f"| {spread([r['load'] for r in results])} "
                    f"| {spread([r['studies'][0]['pipeline'] for r in results])} "
                    f"| {spread([s['pipeline'] for r in results for s in r['studies'][1:]])} "
                    f"| {spread(first)} → {spread(warm)} |"
                )
                print(rows[-1], flush=True)
    load_after = os.getloadavg()
    report = "\n".join(
        [
            "# Pipelines: first study in a fresh worker vs. the next ones",
            "",
            f"Measured {datetime.now().date()} on {machine()}; "
            f"`bench/pipelines.py`, {args.runs} fresh processes per row, {STUDIES} studies each. "
            f"Load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (other work shared "
            "the machine, so absolutes are noisy; compare within a row).",
            "",
            "Seconds, min / median. *imports*: node, pydicom, reading and stacking the series "
            "(not pipeline-specific). *load*: registry, `WarmPipelines.get` (torch / MONAI imports, "
            "weights). *pipeline*: `run_pipeline` (resampling, inference, mapping back). *study*: "
            "pipeline + measurements + SEG + SR + validation (no staging, no storing); the first study adds "
            "*load*, the warm ones are studies 2 and 3 of each process.",
            "",
            "| pipeline | device | imports | load | pipeline, 1st study | pipeline, warm "
            "| study: 1st (with load) → warm |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "ct-tissue (CT sample, 108 × 256²) and the two bone U-Nets (same CT) share the series; "
            "brain-extraction runs on the MR sample (Colin27, 181 × 217 × 181). The bone U-Net is the "
            "test suite's tiny model (8/16 channels, 3 mm grid, 48³ windows): its rows show the "
            "adapters' overhead (TorchScript: the node resamples to 3 mm and back; bundle: MONAI's "
            "own Orientationd/Spacingd/Invertd), not a real model's cost.",
            "",
        ]
    )
    print(report)
    if args.write:
        args.write.write_text(report)


if __name__ == "__main__":
    main()
