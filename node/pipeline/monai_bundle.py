"""A MONAI bundle folder (Model Zoo layout) run as a pipeline.

::

    BUNDLE/
    ├── configs/
    │   ├── metadata.json          version, network_data_format (label names in channel_def)
    │   ├── inference.json|.yaml   network_def, preprocessing, inferer, postprocessing
    │   └── ai-node.yaml           the node's descriptor: accepts, segments with codes/colours
    └── models/
        ├── model.pt               state dict for network_def
        └── model.ts               or a TorchScript export

The bundle defines the model, so its own configuration runs, read with
``monai.bundle.ConfigParser``: ``network_def`` (weights from ``models/``), ``preprocessing``,
``inferer`` (a sliding-window inferer in Model Zoo segmentation bundles) and
``postprocessing``. Only input and output change: the bundle's ``LoadImaged`` reads the
series' volume from memory instead of a file (with the loader's own options: channel first,
dtype…), and ``SaveImage(d)`` transforms are left out. The volume reaches the bundle as a DICOM series
reaches MONAI's ITK and pydicom readers: array axes (column, row, slice), affine in RAS
millimetres; the bundle's ``Orientationd``/``Spacingd``/intensity transforms do the rest and
its ``Invertd`` brings the prediction back onto that grid. The node gives the pipeline its
volume as it is (:attr:`~node.pipeline.base.InputSpec` native) for that reason.

The prediction is a label volume (``AsDiscreted(argmax=True)``, one channel) or per-class
scores (several channels: the node reduces them to the best channel on the model's device). The
bundle's own inferer still stitches the scores of the whole volume on its device before its
postprocessing (``Invertd`` needs them): a bundle with very many classes should end its
postprocessing with ``AsDiscreted(argmax=True)`` as Model Zoo bundles do. The descriptor's segments pick label
values (``index``) and give them codes and colours; other labels are left out of the SEG.
Nothing is downloaded: the weights are the bundle's local files.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from node.errors import PipelineError
from node.imaging.volume import Volume
from node.pipeline.base import Pipeline, PipelineResult
from node.pipeline.descriptor import (
    MonaiBundleDescriptor,
    file_checksum,
    read_descriptor,
    read_mapping,
    versioned,
)

if TYPE_CHECKING:
    from node.config import MonaiBundleSettings

#: config ids of a Model Zoo inference configuration that the adapter uses
NETWORK_DEF = "network_def"
PREPROCESSING = "preprocessing"
INFERER = "inferer"
POSTPROCESSING = "postprocessing"
#: the key SupervisedEvaluator stores predictions under (monai.utils.CommonKeys.PRED)
PRED = "pred"

_LOADERS = frozenset({"LoadImaged"})
_SAVERS = frozenset({"SaveImage", "SaveImaged"})
#: LPS (DICOM) to RAS (MONAI's affine space): negate x and y
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class MonaiBundlePipeline(Pipeline):
    """Base of the pipeline classes :func:`monai_bundle_pipeline` makes, one per bundle."""

    bundle: ClassVar[Path]
    metadata_file: ClassVar[Path]
    inference_file: ClassVar[Path]
    weights: ClassVar[Path]
    checksum: ClassVar[str]
    #: the bundle's label value of each segment, in segment order
    label_values: ClassVar[tuple[int, ...]]
    source: ClassVar[str]

    def __init__(self) -> None:
        self._network: Any = None
        self._preprocessing: Any = None
        self._inferer: Any = None
        self._postprocessing: Any = None
        self._image_keys: tuple[str, ...] = ()
        self._reader: Any = None
        self._lock = threading.Lock()

    @classmethod
    def model_checksum(cls) -> str | None:
        return cls.checksum

    def load(self) -> None:
        import torch
        from monai.bundle import ConfigParser
        from monai.inferers import SimpleInferer

        parser = ConfigParser()
        try:
            parser.read_meta(str(self.metadata_file))
            parser.read_config(str(self.inference_file))
        except (OSError, ValueError) as error:
            raise PipelineError(
                f"Pipeline '{self.name}': the bundle {self.bundle} cannot be read: {error}"
            ) from error
        parser["bundle_root"] = str(self.bundle)
        parser["device"] = f"$torch.device('{self.runtime.device}')"
        device = torch.device(self.runtime.device)

        self._network = self._load_network(parser, device)
        for required in (PREPROCESSING,):
            if required not in parser:
                raise PipelineError(
                    f"Pipeline '{self.name}': {self.inference_file} has no '{required}' section."
                )
        self._preprocessing = parser.get_parsed_content(PREPROCESSING)
        self._inferer = parser.get_parsed_content(INFERER) if INFERER in parser else SimpleInferer()
        self._postprocessing = parser.get_parsed_content(POSTPROCESSING) if POSTPROCESSING in parser else None
        self._reader = _volume_reader()
        self._image_keys = _replace_loader(self._preprocessing, self._reader, self.name)
        if self._postprocessing is not None:
            _drop_savers(self._postprocessing)

    def _load_network(self, parser: Any, device: Any) -> Any:
        import torch

        if self.weights.suffix == ".ts":
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message=r".*torch\.jit\.load.* is deprecated", category=DeprecationWarning
                )
                network = torch.jit.load(str(self.weights), map_location=device)
        else:
            if NETWORK_DEF not in parser:
                raise PipelineError(
                    f"Pipeline '{self.name}': {self.inference_file} has no '{NETWORK_DEF}' to load "
                    f"the state dict {self.weights} into."
                )
            network = parser.get_parsed_content(NETWORK_DEF)
            state = torch.load(str(self.weights), map_location=device, weights_only=True)
            if isinstance(state, dict) and set(state) in ({"model"}, {"state_dict"}):
                state = next(iter(state.values()))  # a checkpoint holding one state dict
            try:
                network.load_state_dict(state)
            except RuntimeError as error:
                raise PipelineError(
                    f"Pipeline '{self.name}': the weights {self.weights} do not fit the bundle's "
                    f"{NETWORK_DEF}: {error}"
                ) from error
        return network.to(device).eval()

    def run(self, volume: Volume) -> PipelineResult:
        if self._network is None:
            raise PipelineError(f"Pipeline '{self.name}' ran before load() was called.")
        import torch
        from monai.data import decollate_batch, list_data_collate

        with self._lock:  # the reader hands over one volume at a time
            self._reader.volume = volume
            try:
                item = self._preprocessing(
                    {key: f"series {volume.series_instance_uid}" for key in self._image_keys}
                )
            finally:
                self._reader.volume = None
        key = self._image_keys[0]
        batch = list_data_collate([item])
        inputs = batch[key].to(torch.device(self.runtime.device))
        prediction = self._inferer(inputs, self._network)
        if prediction.is_floating_point() and prediction.dtype != torch.float32:
            prediction = prediction.float()  # autocast's half precision: postprocess in float32
        item[PRED] = decollate_batch(prediction)[0]
        if self._postprocessing is not None:
            item = self._postprocessing(item)
        prediction = torch.as_tensor(item[PRED]).detach()
        expected = (volume.shape[2], volume.shape[1], volume.shape[0])
        if prediction.ndim != 4 or tuple(prediction.shape[1:]) != expected:
            raise PipelineError(
                f"Pipeline '{self.name}': the bundle's prediction has shape {tuple(prediction.shape)}; "
                f"the series reached it as {expected} (column, row, slice), so it must be (channels, "
                f"{', '.join(str(n) for n in expected)}). Its postprocessing needs an Invertd "
                "that undoes the preprocessing."
            )
        # one channel: label values (AsDiscreted(argmax=True)); several: scores, reduced to the
        # best channel on the prediction's device (max().indices: argmax took 10 times as long on
        # torch 2.13's CPU build), so that only labels, as bytes, travel to the host
        labels = (
            prediction.max(dim=0).indices
            if prediction.shape[0] > 1
            else prediction[0].round().to(torch.int64)
        )
        labels = labels.clamp(min=0)
        size = max(int(labels.max()) if labels.numel() else 0, max(self.label_values)) + 1
        lookup = torch.zeros(
            size, dtype=torch.uint8 if len(self.label_values) < 256 else torch.int32, device=labels.device
        )
        for number, value in enumerate(self.label_values, start=1):
            lookup[value] = number
        # (column, row, slice) back to the volume's (slice, row, column)
        return PipelineResult(label_map=np.ascontiguousarray(lookup[labels].cpu().numpy().transpose(2, 1, 0)))


def monai_bundle_pipeline(settings: MonaiBundleSettings) -> type[MonaiBundlePipeline]:
    """The pipeline class of a configured bundle (``models: - type: monai-bundle``).

    Reads metadata.json and the descriptor and hashes the weights; MONAI is not imported.
    """
    name = settings.name
    bundle = settings.path.expanduser()
    if not bundle.is_dir():
        raise PipelineError(f"Model '{name}': the bundle folder {bundle} does not exist.")
    configs = bundle / "configs"
    metadata_file = configs / "metadata.json"
    if not metadata_file.is_file():
        raise PipelineError(
            f"Model '{name}': {bundle} is not a MONAI bundle: it has no configs/metadata.json."
        )
    metadata = read_mapping(metadata_file, what="bundle metadata")
    inference_file = next(
        (
            configs / f"inference.{suffix}"
            for suffix in ("json", "yaml", "yml")
            if (configs / f"inference.{suffix}").is_file()
        ),
        None,
    )
    if inference_file is None:
        raise PipelineError(
            f"Model '{name}': the bundle {bundle} has no configs/inference.json or configs/inference.yaml."
        )
    weights = _weights(settings, bundle, inference_file)
    descriptor_path = (settings.descriptor or configs / "ai-node.yaml").expanduser()
    descriptor = read_descriptor(descriptor_path, MonaiBundleDescriptor, name=name)
    channel_def = _channel_def(metadata)
    segments = []
    for entry in descriptor.segments:
        if channel_def and entry.index not in channel_def:
            raise PipelineError(
                f"Model '{name}': descriptor {descriptor_path} maps label value {entry.index}, which "
                f"the bundle's metadata.json does not define (channel_def: "
                f"{', '.join(f'{k}: {v}' for k, v in sorted(channel_def.items()))})."
            )
        label = entry.label or channel_def.get(entry.index)
        if not label:
            raise PipelineError(
                f"Model '{name}': segment with label value {entry.index} needs a label in "
                f"{descriptor_path}; the bundle's metadata.json names none."
            )
        segments.append(entry.spec(label[:64]))
    version = descriptor.version or metadata.get("version")
    if not isinstance(version, str) or not version:
        raise PipelineError(f"Model '{name}': neither {descriptor_path} nor {metadata_file} gives a version.")
    checksum = file_checksum(weights)
    description = descriptor.description or str(metadata.get("description") or metadata.get("name") or "")
    attributes: dict[str, Any] = {
        "name": name,
        "version": versioned(version, checksum),
        "description": description,
        "accepts": descriptor.accepts.criteria(),
        "segments": tuple(segments),
        "devices": descriptor.device_kinds(),
        "amp": descriptor.amp,
        "bundle": bundle,
        "metadata_file": metadata_file,
        "inference_file": inference_file,
        "weights": weights,
        "checksum": checksum,
        "label_values": tuple(entry.index for entry in descriptor.segments),
        "source": f"MONAI bundle {bundle} (weights {weights.name}, descriptor {descriptor_path})",
        "__module__": __name__,
    }
    class_name = (
        "".join(p.capitalize() for p in name.replace(".", "-").replace("_", "-").split("-")) or "Bundle"
    )
    return type(class_name, (MonaiBundlePipeline,), attributes)


def _weights(settings: MonaiBundleSettings, bundle: Path, inference_file: Path) -> Path:
    if settings.weights is not None:
        weights = settings.weights.expanduser()
        if not weights.is_file():
            raise PipelineError(f"Model '{settings.name}': the weights file {weights} does not exist.")
        return weights
    models = bundle / "models"
    state_dict, script = models / "model.pt", models / "model.ts"
    # model.pt with the bundle's own network definition is the bundle as trained; model.ts is an
    # export of it, used when there is no state dict
    if state_dict.is_file():
        return state_dict
    if script.is_file():
        return script
    raise PipelineError(
        f"Model '{settings.name}': the bundle {bundle} has neither models/model.pt nor "
        "models/model.ts; nothing is downloaded, so put the weights there or name them with weights:."
    )


def _channel_def(metadata: dict[str, Any]) -> dict[int, str]:
    """Label names by value from metadata.json ``network_data_format.outputs.pred.channel_def``."""
    try:
        raw = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    except (KeyError, TypeError):
        return {}
    if not isinstance(raw, dict):
        return {}
    names = {}
    for key, value in raw.items():
        try:
            names[int(key)] = str(value)
        except ValueError:
            continue
    return names


def _volume_reader() -> Any:
    """A MONAI ImageReader that hands over the volume being run instead of reading a file."""
    from monai.data import ImageReader
    from monai.utils import MetaKeys, SpaceKeys

    class VolumeReader(ImageReader):
        volume: Volume | None = None

        def verify_suffix(self, filename: Any) -> bool:
            return True

        def read(self, data: Any, **kwargs: Any) -> Volume:
            if self.volume is None:
                raise PipelineError(f"No volume is being run, so {data!r} cannot be read.")
            return self.volume

        def get_data(self, img: Volume) -> tuple[np.ndarray, dict[str, Any]]:
            # MONAI's ITK and pydicom readers give a series as (column, row, slice)
            array = np.ascontiguousarray(np.transpose(img.array, (2, 1, 0)))
            kij = img.affine()
            affine = _LPS_TO_RAS @ kij[:, [2, 1, 0, 3]]
            meta: dict[str, Any] = {
                MetaKeys.AFFINE: affine,
                MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape),
                MetaKeys.SPACE: SpaceKeys.RAS,
                MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            }
            return array, meta

    return VolumeReader()


def _replace_loader(preprocessing: Any, reader: Any, name: str) -> tuple[str, ...]:
    """Make the bundle's LoadImaged read from ``reader``; return the keys it loads."""
    transforms = getattr(preprocessing, "transforms", None)
    if transforms is None:
        raise PipelineError(f"Pipeline '{name}': the bundle's preprocessing is not a Compose of transforms.")
    for position, transform in enumerate(transforms):
        kind = type(transform).__name__
        if kind in _LOADERS:
            keys = tuple(str(k) for k in getattr(transform, "keys", ("image",)))
            replaced = list(transforms)
            replaced[position] = _InMemoryLoad(transform, reader)
            preprocessing.transforms = (
                type(transforms)(replaced) if isinstance(transforms, tuple) else replaced
            )
            return keys
    raise PipelineError(
        f"Pipeline '{name}': the bundle's preprocessing has no LoadImaged transform, so the node "
        "cannot tell where the image goes in."
    )


class _InMemoryLoad:
    """Calls the bundle's ``LoadImaged`` with the in-memory reader, keeping its options."""

    def __init__(self, loader: Any, reader: Any) -> None:
        self.loader = loader
        self.reader = reader

    def __call__(self, data: Any) -> Any:
        return self.loader(data, reader=self.reader)


def _drop_savers(postprocessing: Any) -> None:
    transforms = getattr(postprocessing, "transforms", None)
    if transforms is None:
        return
    kept = [t for t in transforms if type(t).__name__ not in _SAVERS]
    for transform in kept:
        _drop_savers(transform)
    postprocessing.transforms = type(transforms)(kept) if isinstance(transforms, tuple) else kept
