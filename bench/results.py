"""Result-path benchmark at the size of a whole-body model: 300 × 512² CT, 100 and 5 segments.

What a worker does after the model has answered, on a TotalSegmentator-sized result (a label
map of 100 non-overlapping segments, each 10-120 slices long; 5 segments for a small model),
against two baselines measured in the same run on the same data:

- node: the processing chain after the pipeline (:mod:`node.chain`'s stages: checking the
  label map and measuring, outlines, SEG, SR, planar SR, validation with dciodvfy) and writing
  the three objects to disk, as the worker stages them;
- highdicom: highdicom's default BINARY Segmentation of the same label map, built and written
  (the reference the node's SEG is compared with in tests/unit/test_results_seg.py);
- floor: finding the non-empty (segment, slice) frames, packing their bits and writing them
  (no header, no functional groups, no SR): no SEG writer can do less.

Every measurement is a fresh process (``--child``), so imports and caches are paid alike and
peak memory (VmHWM) is the measurement's own; memory is given above what the process held
once the input (the CT's datasets, its volume and the label map) was built.

    .venv/bin/python bench/results.py --runs 3 --write docs/benchmarks.md
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
from bench.sections import write_section  # noqa: E402

SLICES, SIZE = 300, 512
MODES = ("node", "highdicom", "floor")


def memory_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def synthetic_result(segments: int):
    """The CT series (datasets and volume) and a label map of ``segments`` segments.

    Segment n sits in cell n of a 10 × 10 grid over the slice (an ellipse of the cell), on a run
    of 10 to 120 slices at a random place: non-overlapping, like a whole-body model's organs.
    """
    import numpy as np

    from node.imaging.series import build_volume
    from tests.factories import make_series

    rng = np.random.default_rng(2026)
    stored = rng.integers(900, 1300, size=(SLICES, SIZE, SIZE), dtype=np.int16)
    datasets = make_series(stored, spacing=(1.5, 0.8, 0.8))
    del stored
    volume = build_volume(datasets)
    label_map = np.zeros((SLICES, SIZE, SIZE), dtype=np.uint8)
    cell = SIZE // 10
    rows, columns = np.mgrid[0:cell, 0:cell]
    centre = (cell - 1) / 2
    for number in range(1, segments + 1):
        row, column = divmod(number - 1, 10)
        a, b = rng.uniform(0.25, 0.48, size=2) * cell
        ellipse = ((rows - centre) / a) ** 2 + ((columns - centre) / b) ** 2 <= 1
        length = int(rng.integers(10, 121))
        start = int(rng.integers(0, SLICES - length + 1))
        block = label_map[
            start : start + length, row * cell : (row + 1) * cell, column * cell : (column + 1) * cell
        ]
        block[:, ellipse] = number
    return datasets, volume, label_map


def segment_specs(count: int):
    from node.pipeline.base import Code, Measurement, SegmentSpec

    organ = Code("123037004", "SCT", "Anatomical Structure")
    return tuple(
        SegmentSpec(
            label=f"structure {n}",
            category=organ,
            type=Code("91723000", "SCT", "Anatomical structure"),
            rgb=((37 * n) % 256, (91 * n) % 256, (53 * n) % 256),
            measurements=(Measurement.VOLUME, Measurement.MEAN_INTENSITY),
        )
        for n in range(1, count + 1)
    )


def child(mode: str, segments: int, folder: Path) -> dict:
    """One measurement in this (fresh) process."""
    import numpy as np

    datasets, volume, label_map = synthetic_result(segments)
    frames = int(
        sum(
            np.count_nonzero(np.bincount(label_map[k].ravel(), minlength=segments + 1)[1:])
            for k in range(SLICES)
        )
    )
    # every module the measurement uses is imported before the clock starts, as a warm worker
    # has it
    import highdicom  # noqa: F401
    import pydicom  # noqa: F401

    import node.chain  # noqa: F401
    import node.results.products  # noqa: F401

    base = memory_kib("VmRSS")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if mode == "node":
        node_path(datasets, volume, label_map, segments, folder, seconds)
    elif mode == "highdicom":
        highdicom_path(datasets, volume, label_map, segments, folder, seconds)
    else:
        floor_path(label_map, segments, folder, seconds)
    total = time.perf_counter() - started
    return {
        "seconds": seconds,
        "total": total,
        "peak_mib": (memory_kib("VmHWM") - base) / 1024,
        "frames": frames,
        "volume_mib": volume.array.nbytes / 2**20,
    }


def node_path(datasets, volume, label_map, segments, folder: Path, seconds: dict[str, float]) -> None:
    """The worker's own chain (node.chain.process_series) with a model that answers the label
    map at once, then the objects written as the worker stages them."""
    from node.chain import process_series
    from node.config import ResultKind
    from node.pipeline.base import Pipeline, PipelineResult, SeriesCriteria
    from node.results.identity import ResultIdentity
    from node.results.seg import DeviceInfo
    from node.support.timing import StageTimer

    class WholeBody(Pipeline):
        name, version, description = "bench-whole-body", "1.0.0", "answers the synthetic label map"
        accepts = SeriesCriteria(modalities=frozenset({"CT"}))

        def run(self, volume):  # noqa: ARG002 - the answer is known
            return PipelineResult(label_map=label_map)

    WholeBody.segments = segment_specs(segments)
    timer = StageTimer()
    result = process_series(
        volume,
        WholeBody(),
        datasets,
        kinds=[ResultKind.SEG, ResultKind.SR, ResultKind.PLANAR_SR],
        identity=ResultIdentity.new(),
        device=DeviceInfo.for_node(device_serial_number="BENCH"),
        timer=timer,
    )
    with timer.stage("write"):
        for index, obj in enumerate(result.objects):
            obj.write(folder / f"{index}.dcm", durable=True)  # as the worker stages them
    seconds.update(timer.seconds)


def highdicom_path(datasets, volume, label_map, segments, folder: Path, seconds: dict[str, float]) -> None:
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
    ordered = [by_uid[uid] for uid in volume.source_instance_uids]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=spec.label,
            segmented_property_category=hd.sr.CodedConcept("123037004", "SCT", "Anatomical Structure"),
            segmented_property_type=hd.sr.CodedConcept("91723000", "SCT", "Anatomical structure"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="bench", family=codes.cid7162.ArtificialIntelligence, version="1"
            ),
        )
        for n, spec in enumerate(segment_specs(segments), start=1)
    ]
    started = time.perf_counter()
    seg = hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=label_map,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=1,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="bench",
        manufacturer_model_name="bench",
        software_versions="1",
        device_serial_number="1",
    )
    seconds["construct"] = time.perf_counter() - started
    started = time.perf_counter()
    with open(folder / "seg.dcm", "wb") as out:
        pydicom.dcmwrite(out, seg, enforce_file_format=True)
        out.flush()
        os.fsync(out.fileno())
    seconds["write"] = time.perf_counter() - started


def floor_path(label_map, segments, folder: Path, seconds: dict[str, float]) -> None:
    import numpy as np

    started = time.perf_counter()
    present = [
        np.nonzero(np.bincount(label_map[k].ravel(), minlength=segments + 1)[1:])[0] + 1
        for k in range(label_map.shape[0])
    ]
    seconds["find frames"] = time.perf_counter() - started
    started = time.perf_counter()
    packed = []
    for k, numbers in enumerate(present):
        if len(numbers):
            planes = label_map[k][None] == numbers[:, None, None].astype(label_map.dtype)
            packed.append(np.packbits(planes.reshape(len(numbers), -1), axis=1, bitorder="little"))
    seconds["pack"] = time.perf_counter() - started
    started = time.perf_counter()
    with open(folder / "frames.bin", "wb") as out:
        for block in packed:
            out.write(block.tobytes())
        out.flush()
        os.fsync(out.fileno())
    seconds["write"] = time.perf_counter() - started


def measure(mode: str, segments: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-results-") as folder:
        command = [sys.executable, __file__, "--child", mode, "--segments", str(segments), "--folder", folder]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} with {segments} segments failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f} / {statistics.median(values):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per row")
    parser.add_argument("--segments", type=int, nargs="*", default=[100, 5])
    parser.add_argument("--write", type=Path, help="write the Markdown report here")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.segments[0], args.folder)))
        return

    load_before = os.getloadavg()
    sections = []
    for segments in args.segments:
        results = {mode: [measure(mode, segments) for _ in range(args.runs)] for mode in MODES}
        node, highdicom, floor = results["node"], results["highdicom"], results["floor"]
        frames = node[0]["frames"]
        stages = list(node[0]["seconds"])
        lines = [
            f"### {segments} segments ({frames} non-empty frames, {node[0]['volume_mib']:.0f} MiB volume)",
            "",
            "| path | " + " | ".join(stages) + " | total | peak above input (MiB) |",
            "|---|" + "---|" * (len(stages) + 2),
            "| node | "
            + " | ".join(spread([r["seconds"][s] for r in node]) for s in stages)
            + f" | **{spread([r['total'] for r in node])}** | {spread([r['peak_mib'] for r in node], 0)} |",
        ]
        hd_total = [r["total"] for r in highdicom]
        floor_total = [r["total"] for r in floor]
        node_median = statistics.median([r["total"] for r in node])
        lines += [
            "",
            "| baseline | stages | total | peak above input (MiB) |",
            "|---|---|---|---|",
            "| highdicom 0.28 default SEG (construct + write) | "
            + ", ".join(
                f"{s} {spread([r['seconds'][s] for r in highdicom])}" for s in highdicom[0]["seconds"]
            )
            + f" | {spread(hd_total)} | {spread([r['peak_mib'] for r in highdicom], 0)} |",
            "| floor (find frames, pack, write) | "
            + ", ".join(f"{s} {spread([r['seconds'][s] for r in floor])}" for s in floor[0]["seconds"])
            + f" | {spread(floor_total)} | {spread([r['peak_mib'] for r in floor], 0)} |",
            "",
            f"Ratios of medians: node / floor **{node_median / statistics.median(floor_total):.2f}**, "
            f"highdicom SEG alone / node **{statistics.median(hd_total) / node_median:.1f}**.",
            "",
        ]
        sections.append("\n".join(lines))
        print(sections[-1], flush=True)
    load_after = os.getloadavg()
    report = "\n".join(
        [
            "## Result path at whole-body size: 300 × 512² CT, 100 and 5 segments",
            "",
            f"Measured {datetime.now().date()} on {cpu_description()}; {python_description()}. "
            f"`bench/results.py`, {args.runs} fresh processes per row, seconds min / median. Load "
            f"average {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
            "",
            "The node's path is the worker's own chain (`node.chain.process_series`) after the "
            "model answered, then the staging: *pipeline* (the label map handed over and "
            "checked), *measure* (voxels and means per segment), *outlines* (one per segment, "
            "shared by both SRs, with their Image Library), *seg*, *sr* (with the outlines), "
            "*planar-sr*, *validate* (what is left of dciodvfy's checks once the objects are "
            "built: each object's check starts when it is complete, beside the next one's "
            "building), *write* (Part 10 files, fsynced, as staged). Baselines on the same "
            "label map in the same run; each row a fresh process, imports done before the clock.",
            "",
            *sections,
        ]
    )
    if args.write:
        write_section(args.write, "bench/results.py", report)


if __name__ == "__main__":
    main()
