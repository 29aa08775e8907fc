"""A TorchScript file plus a descriptor, run as a pipeline.

The model is a TorchScript module that takes a float tensor ``(N, 1, X, Y, Z)`` on the grid
the descriptor's ``input`` asks for (the node resamples, reorients and scales intensities)
and returns scores ``(N, C, X, Y, Z)``, or labels. With ``activation: softmax`` every voxel
gets the channel with the highest score (channel 0 is background) and segment ``index`` values
name channels; with ``sigmoid`` every segment's channel is on where its logit is above 0 (a
probability above 0.5), so segments may overlap; with ``labels`` the model returns each voxel's
label itself, ``(N, 1, X, Y, Z)`` or ``(N, X, Y, Z)`` integers, and ``index`` values name labels.
``inference.roi_size`` runs it window by window (MONAI's windows and Gaussian weighting); the
scores of a softmax model are then reduced to labels a band of planes at a time on the model's
device (:mod:`node.pipeline.windows`), so a model with a hundred classes never has all its
scores in memory at once; a labels model runs on windows that do not overlap. Without
``roi_size`` the whole volume goes through at once and only its labels leave the device.

:func:`torchscript_pipeline` reads the descriptor and hashes the weights when the registry is
built (no torch import); ``load()`` reads the module onto the runtime's device.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from node.errors import PipelineError
from node.imaging.volume import Volume
from node.pipeline.base import Pipeline, PipelineResult
from node.pipeline.descriptor import (
    InferenceEntry,
    TorchScriptDescriptor,
    file_checksum,
    read_descriptor,
    versioned,
)

if TYPE_CHECKING:
    from node.config import TorchScriptModelSettings


class TorchScriptPipeline(Pipeline):
    """Base of the pipeline classes :func:`torchscript_pipeline` makes, one per model."""

    weights: ClassVar[Path]
    checksum: ClassVar[str]
    inference: ClassVar[InferenceEntry]
    #: the output channel of each segment, in segment order
    channels: ClassVar[tuple[int, ...]]
    #: where the class came from, for ``ai-node pipelines show``
    source: ClassVar[str]

    def __init__(self) -> None:
        self._model: Any = None

    @classmethod
    def model_checksum(cls) -> str | None:
        return cls.checksum

    def load(self) -> None:
        import torch

        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript loading; it still works, and is what this
            # adapter is for
            warnings.filterwarnings(
                "ignore", message=r".*torch\.jit\.load.* is deprecated", category=DeprecationWarning
            )
            try:
                model = torch.jit.load(str(self.weights), map_location=self.runtime.device)
            except (RuntimeError, ValueError) as error:
                raise PipelineError(
                    f"Pipeline '{self.name}': {self.weights} is not a TorchScript file torch can "
                    f"load: {error}"
                ) from error
        model.eval()
        self._model = model
        if self.inference.roi_size is not None:
            import monai.inferers  # noqa: F401 - imported once, at load, not per study

    def run(self, volume: Volume) -> PipelineResult:
        if self._model is None:
            raise PipelineError(f"Pipeline '{self.name}' ran before load() was called.")
        import torch

        device = torch.device(self.runtime.device)
        image = torch.from_numpy(np.ascontiguousarray(volume.array, dtype=np.float32))[None, None].to(device)
        activation = self.inference.activation
        if activation == "sigmoid":
            scores = self._scores(image, volume)
            return PipelineResult(
                masks={
                    segment.label: (scores[0, channel] > 0).cpu().numpy()
                    for segment, channel in zip(self.segments, self.channels, strict=True)
                }
            )
        if activation == "labels":
            values = self._labels(image, volume)
        elif self.inference.roi_size is None:
            values = self._scores(image, volume)[0].max(dim=0).indices
        else:
            from node.pipeline.windows import best_channel_windows

            values = best_channel_windows(
                image,
                self._checked_windows,
                roi_size=self.inference.roi_size,
                overlap=self.inference.overlap,
                sw_batch_size=self.inference.sw_batch_size,
            )
        return PipelineResult(label_map=self._segment_numbers(values).cpu().numpy())

    def _scores(self, image: Any, volume: Volume) -> Any:
        """The model's scores of the whole volume, ``(1, C, X, Y, Z)``, on the model's device."""
        import torch

        roi = self.inference.roi_size
        if roi is None:
            scores = self._model(image)
        else:
            from monai.inferers import sliding_window_inference

            scores = sliding_window_inference(
                image,
                roi_size=roi,
                sw_batch_size=self.inference.sw_batch_size,
                predictor=self._model,
                overlap=self.inference.overlap,
                mode="gaussian",
            )
        scores = torch.as_tensor(scores)
        if scores.ndim != 5 or scores.shape[0] != 1 or tuple(scores.shape[2:]) != volume.shape:
            raise PipelineError(
                f"Pipeline '{self.name}': the model returned a tensor of shape {tuple(scores.shape)} "
                f"for an input of shape {tuple(image.shape)}; it must return (1, channels, "
                f"{', '.join(str(n) for n in volume.shape)})."
            )
        self._check_channels(int(scores.shape[1]))
        return scores

    def _checked_windows(self, windows: Any) -> Any:
        """The model on a batch of windows, its answer checked as :meth:`_scores` checks the
        whole volume's."""
        import torch

        scores = torch.as_tensor(self._model(windows))
        if scores.ndim != 5 or scores.shape[0] != windows.shape[0] or scores.shape[2:] != windows.shape[2:]:
            raise PipelineError(
                f"Pipeline '{self.name}': the model returned a tensor of shape {tuple(scores.shape)} "
                f"for windows of shape {tuple(windows.shape)}; it must return (windows, channels, "
                f"{', '.join(str(n) for n in windows.shape[2:])})."
            )
        self._check_channels(int(scores.shape[1]))
        return scores

    def _check_channels(self, count: int) -> None:
        if max(self.channels) >= count:
            raise PipelineError(
                f"Pipeline '{self.name}': the model returned {count} channel(s), but its "
                f"descriptor maps segments to channels {list(self.channels)}."
            )

    def _labels(self, image: Any, volume: Volume) -> Any:
        """The labels a ``labels`` model returns, ``(X, Y, Z)`` int64, on the model's device;
        window by window with ``roi_size`` (:func:`~node.pipeline.windows.labels_windows`)."""
        import torch

        roi = self.inference.roi_size
        if roi is None:
            labels = torch.as_tensor(self._model(image))
        else:
            from node.pipeline.windows import labels_windows

            labels = labels_windows(
                image, self._model, roi_size=roi, sw_batch_size=self.inference.sw_batch_size
            )[None]
        if labels.ndim == 5 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 4 or labels.shape[0] != 1 or tuple(labels.shape[1:]) != volume.shape:
            raise PipelineError(
                f"Pipeline '{self.name}': the model returned labels of shape {tuple(labels.shape)}; "
                f"activation labels needs (1, 1, {', '.join(str(n) for n in volume.shape)})."
            )
        if labels.is_floating_point():
            if not bool((labels == labels.round()).all()):
                raise PipelineError(
                    f"Pipeline '{self.name}': the model returned labels that are not whole numbers; "
                    "a labels model returns each voxel's label value."
                )
            labels = labels.round()
        return labels[0].to(torch.int64)

    def _segment_numbers(self, values: Any) -> Any:
        """Model label or channel values to segment numbers (0 for any the descriptor does not
        name), in the smallest integer type they fit."""
        import torch

        if values.numel() and int(values.min()) < 0:
            raise PipelineError(f"Pipeline '{self.name}': the model returned a negative label.")
        top = int(values.max()) if values.numel() else 0
        size = max(top, max(self.channels)) + 1
        dtype = torch.uint8 if len(self.channels) < 256 else torch.int32
        lookup = torch.zeros(size, dtype=dtype, device=values.device)
        for number, channel in enumerate(self.channels, start=1):
            lookup[channel] = number
        return lookup[values]


def torchscript_pipeline(settings: TorchScriptModelSettings) -> type[TorchScriptPipeline]:
    """The pipeline class of a configured TorchScript model (``models: - type: torchscript``)."""
    descriptor_path = settings.descriptor.expanduser()
    descriptor = read_descriptor(descriptor_path, TorchScriptDescriptor, name=settings.name)
    if settings.weights is not None:
        weights = settings.weights.expanduser()
    elif descriptor.model is not None:
        weights = descriptor_path.parent / descriptor.model
    else:
        raise PipelineError(
            f"Model '{settings.name}': neither the configuration (weights:) nor the descriptor "
            f"{descriptor_path} (model:) names the TorchScript file."
        )
    if not weights.is_file():
        raise PipelineError(f"Model '{settings.name}': the TorchScript file {weights} does not exist.")
    checksum = file_checksum(weights)
    try:
        input_spec = descriptor.input.spec()
    except ValueError as error:
        raise PipelineError(f"Model '{settings.name}': descriptor {descriptor_path}: {error}") from error
    attributes: dict[str, Any] = {
        "name": descriptor.name,
        "version": versioned(descriptor.version, checksum),
        "description": descriptor.description,
        "accepts": descriptor.accepts.criteria(),
        "segments": tuple(s.spec(s.label or "") for s in descriptor.segments),
        "input": input_spec,
        "devices": descriptor.device_kinds(),
        "amp": descriptor.amp,
        "weights": weights,
        "checksum": checksum,
        "inference": descriptor.inference,
        "channels": tuple(s.index for s in descriptor.segments),
        "source": f"TorchScript {weights} (descriptor {descriptor_path})",
        "__module__": __name__,
    }
    return type(_class_name(settings.name), (TorchScriptPipeline,), attributes)


def _class_name(name: str) -> str:
    return (
        "".join(part.capitalize() for part in name.replace(".", "-").replace("_", "-").split("-")) or "Model"
    )
