"""Sliding-window inference that keeps labels, not scores.

A model with a hundred classes run window by window (MONAI's ``sliding_window_inference``)
stitches its scores into one tensor of the whole volume before anyone takes the arg-max: 31 GB
as float32 for 101 classes on a 300 × 512² grid, 82 GB on a GPU that has 80. Here the windows
are the same, taken in the same order with the same Gaussian weights, but the stitched scores
live only for a band of planes along the first axis: once no window still to come covers a
plane, its scores are divided by their weights, reduced to the index of the best channel and
dropped. The result is the arg-max of MONAI's output, value for value (a test compares them),
at a memory cost of one band, on the model's own device.

Imports torch and MONAI: for the adapters' ``run()``, never at the node's import time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: the Gaussian's standard deviation per window size, as MONAI's default
SIGMA_SCALE = 0.125


def scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> tuple[int, ...]:
    """The step between windows along each axis, as MONAI computes it
    (``monai.inferers.utils._get_scan_interval``, private there): the whole window when it
    spans the axis, else ``int(roi × (1 − overlap))``, at least 1."""
    steps = []
    for size, roi in zip(image_size, roi_size, strict=True):
        step = roi if roi == size else int(roi * (1 - overlap))
        steps.append(step if step > 0 else 1)
    return tuple(steps)


def best_channel_windows(
    image: Any,
    predictor: Callable[[Any], Any],
    *,
    roi_size: Sequence[int],
    overlap: float,
    sw_batch_size: int,
) -> Any:
    """The index of the highest-scoring channel of every voxel of ``image`` (1, 1, X, Y, Z), as
    ``sliding_window_inference(image, roi_size, sw_batch_size, predictor, overlap,
    mode="gaussian").argmax(dim=1)`` would give it, on ``image``'s device, as an int64 tensor
    (X, Y, Z)."""
    import torch
    import torch.nn.functional as functional
    from monai.data.utils import compute_importance_map, dense_patch_slices

    if image.ndim != 5 or image.shape[0] != 1:
        raise ValueError(f"image of shape {tuple(image.shape)}; (1, channels, X, Y, Z) expected")
    original = tuple(int(n) for n in image.shape[2:])
    roi = tuple(int(n) for n in roi_size)
    # a window larger than the image: pad the image to the window, as MONAI does (zeros)
    padding: list[int] = []
    for extent, depth in zip(reversed(original), reversed(roi), strict=True):
        missing = max(depth - extent, 0)
        padding += [missing // 2, missing - missing // 2]
    if any(padding):
        image = functional.pad(image, padding, mode="constant", value=0)
    size = tuple(int(n) for n in image.shape[2:])
    windows = dense_patch_slices(size, roi, scan_interval(size, roi, overlap))
    weight = compute_importance_map(
        roi, mode="gaussian", sigma_scale=SIGMA_SCALE, device=image.device, dtype=image.dtype
    )
    batches = [windows[start : start + sw_batch_size] for start in range(0, len(windows), sw_batch_size)]
    # the planes a batch touches, once those before it are done: its windows' starts and a window
    band = roi[0] + max(batch[-1][0].start - batch[0][0].start for batch in batches)
    best = torch.empty(size, dtype=torch.int64, device=image.device)
    scores: Any = None  # (channels, band, Y, Z), planes kept modulo band
    weights = torch.zeros((band, *size[1:]), dtype=image.dtype, device=image.device)
    done = 0  # planes [0, done) are final

    def finish(until: int) -> None:
        nonlocal done
        for plane in range(done, until):
            at = plane % band
            best[plane] = (scores[:, at] / weights[at]).max(dim=0).indices
            scores[:, at] = 0
            weights[at] = 0
        done = max(done, until)

    def add(target: Any, window: tuple[slice, ...], values: Any, leading: int) -> None:
        """``target[..., planes of window, rows, columns] += values``, planes modulo band."""
        first, last = window[0].start % band, (window[0].stop - 1) % band + 1
        rest = (slice(None),) * leading
        if first < last:
            target[(*rest, slice(first, last), *window[1:])] += values
        else:  # the window wraps around the end of the band
            split = band - first
            target[(*rest, slice(first, band), *window[1:])] += values[(*rest, slice(0, split))]
            target[(*rest, slice(0, last), *window[1:])] += values[(*rest, slice(split, None))]

    # MONAI adds up the weights of all windows before the scores: per voxel, the same windows in
    # the same order, so the same sums
    for batch in batches:
        finish(batch[0][0].start)
        data = torch.cat([image[(slice(None), slice(None), *window)] for window in batch])
        predicted = torch.as_tensor(predictor(data))
        if scores is None:
            scores = torch.zeros(
                (predicted.shape[1], band, *size[1:]), dtype=image.dtype, device=image.device
            )
        for window, prediction in zip(batch, predicted, strict=True):
            prediction *= weight  # in place, in the prediction's own dtype, as MONAI does
            add(scores, window, prediction, 1)
            add(weights, window, weight, 0)
    finish(size[0])
    if any(padding):
        crop = [slice(padding[2 * (2 - axis)], padding[2 * (2 - axis)] + original[axis]) for axis in range(3)]
        best = best[tuple(crop)]
    return best


def labels_windows(
    image: Any, predictor: Callable[[Any], Any], *, roi_size: Sequence[int], sw_batch_size: int
) -> Any:
    """Labels of a model that returns labels, window by window: ``(X, Y, Z)`` on ``image``'s
    device, in the predictor's integer type.

    Windows are laid edge to edge (MONAI's windows with no overlap); the last window along an
    axis is moved back to end at the border, as MONAI moves it, and its labels replace those it
    covers twice. Labels are never blended: the mean of labels 1 and 3 is not label 2.
    """
    import torch
    import torch.nn.functional as functional
    from monai.data.utils import dense_patch_slices

    original = tuple(int(n) for n in image.shape[2:])
    roi = tuple(int(n) for n in roi_size)
    padding: list[int] = []
    for extent, depth in zip(reversed(original), reversed(roi), strict=True):
        missing = max(depth - extent, 0)
        padding += [missing // 2, missing - missing // 2]
    if any(padding):
        image = functional.pad(image, padding, mode="constant", value=0)
    size = tuple(int(n) for n in image.shape[2:])
    windows = dense_patch_slices(size, roi, scan_interval(size, roi, 0.0))
    labels: Any = None
    for start in range(0, len(windows), sw_batch_size):
        batch = windows[start : start + sw_batch_size]
        predicted = torch.as_tensor(
            predictor(torch.cat([image[(slice(None), slice(None), *w)] for w in batch]))
        )
        if labels is None:
            labels = torch.zeros(size, dtype=predicted.dtype, device=image.device)
        for window, prediction in zip(batch, predicted, strict=True):
            labels[window] = prediction[0] if prediction.ndim == 4 else prediction
    if any(padding):
        crop = [slice(padding[2 * (2 - axis)], padding[2 * (2 - axis)] + original[axis]) for axis in range(3)]
        labels = labels[tuple(crop)]
    return labels
