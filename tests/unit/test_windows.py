"""Sliding windows that keep labels (node.pipeline.windows), against MONAI's own stitching."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference

from node.pipeline.windows import best_channel_windows, labels_windows


def _network(channels: int = 7) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, channels, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv3d(channels, channels, 3, padding=1),
    ).eval()


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "batch"),
    [
        ((40, 33, 29), (16, 16, 16), 0.25, 1),
        ((40, 33, 29), (16, 12, 10), 0.5, 3),  # a batch of windows spans several planes
        ((10, 50, 40), (16, 16, 16), 0.25, 2),  # the window is deeper than the image: padded
        ((23, 23, 23), (8, 8, 8), 0.0, 4),
    ],
)
def test_the_best_channel_is_monais_argmax_voxel_for_voxel(shape, roi, overlap, batch) -> None:
    network = _network()
    image = torch.randn((1, 1, *shape))

    with torch.inference_mode():
        expected = sliding_window_inference(image, roi, batch, network, overlap=overlap, mode="gaussian")
        best = best_channel_windows(image, network, roi_size=roi, overlap=overlap, sw_batch_size=batch)

    assert torch.equal(best, expected.argmax(dim=1)[0])


def test_the_stitched_scores_live_for_a_band_of_planes_not_the_volume() -> None:
    seen: list[int] = []

    def counting(windows: torch.Tensor) -> torch.Tensor:
        seen.append(int(windows.shape[0]))
        return _network()(windows)

    image = torch.randn((1, 1, 64, 16, 16))
    allocated: list[tuple[int, ...]] = []
    zeros = torch.zeros

    def recording_zeros(*args, **kwargs):
        tensor = zeros(*args, **kwargs)
        allocated.append(tuple(tensor.shape))
        return tensor

    with torch.inference_mode(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "zeros", recording_zeros)
        best_channel_windows(image, counting, roi_size=(8, 16, 16), overlap=0.25, sw_batch_size=1)

    scores = [shape for shape in allocated if len(shape) == 4]
    # channels × one window's depth (batches of one window span no more) × a plane: the 64
    # planes of the volume are never there at once
    assert scores == [(7, 8, 16, 16)]
    assert sum(seen) == 11  # every window once


def test_labels_are_laid_edge_to_edge_and_the_last_window_replaces_what_it_covers_twice() -> None:
    image = torch.zeros((1, 1, 10, 4, 4))

    def window_number(windows: torch.Tensor) -> torch.Tensor:
        window_number.calls += 1
        return torch.full((windows.shape[0], 1, *windows.shape[2:]), window_number.calls, dtype=torch.int64)

    window_number.calls = 0
    labels = labels_windows(image, window_number, roi_size=(4, 4, 4), sw_batch_size=1)

    # windows start at planes 0, 4 and (moved back to end at the border) 6
    assert labels[:, 0, 0].tolist() == [1, 1, 1, 1, 2, 2, 3, 3, 3, 3]
