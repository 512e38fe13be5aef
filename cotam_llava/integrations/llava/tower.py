"""The CoTAM vision tower for the original LLaVA code base (``llava-torch`` 1.2.2.post1), and its image processor.

LLaVA's builder (patched by ``patches/llava/``) calls :func:`build_vision_tower` first; when
``mm_vision_tower`` names a *CoTAM tower folder* it gets a :class:`CoTAMLlavaVisionTower`, otherwise ``None``
and the stock code runs exactly as before::

    edge   PIL image ─CoTAMLlavaImageProcessor.preprocess─▶ EdgeEncoder (centre square, codec canvas, guidance)
               ─▶ .cotam bytes ─pack_into_pixels─▶ float tensor (3, S, S): magic, length, one byte per value
               (or .cotam bytes passed as they are)          ▲ integers 0..255: fp16 / bf16 casts keep them exactly
    LLaVA  process_images / the training data set ─▶ images (B, 3, S, S) ─.to(fp16)─▶ model.encode_images
    cloud  CoTAMLlavaVisionTower.forward(images) ─unpack─▶ bytes ─parse, validate, entropy-decode (codec, fp32)─▶
               x̂ ─the host's CLIP image processor─▶ pixels ┐
               ŷ ─adapter (fp32)─▶ Δ ──────────────────────┴▶ CLIP encoder (Δ added to its embedding output)
               ─▶ hidden_states[mm_vision_select_layer], 'patch' (drops [CLS]) or 'cls_patch' ─▶ images.dtype
               ─▶ LLaVA's projector and LLM (unchanged)

Rows that are not packed bitstreams (e.g. the zero images LLaVA's training data set gives text-only samples)
are normalised pixels: they are compressed on the fly (codec forward, the ŷ a bitstream would carry), as
:class:`~cotam_llava.vision.tower.CoTAMVisionTower` does for pixels.

A *CoTAM tower folder* (written by :func:`save_tower_folder`)::

    cotam_tower.json      {"format": "cotam-llava-tower", "version": 1, "encoder_class": "CLIPVisionModel",
                           "cotam": <CoTAMTowerConfig>}   ← the marker the builder looks for
    config.json, model.safetensors, preprocessor_config.json   the CLIP encoder and its image processor, as
                           CLIPVisionModel / CLIPImageProcessor save them (a stock CLIPVisionTower reads them too)
    adapter.safetensors   the latent feature adapter
    codec/                the codec checkpoint (config.json + model.safetensors, finalized CDF tables)

The contract of ``llava/model/multimodal_encoder/clip_encoder.py: CLIPVisionTower`` is kept: ``__init__(vision_tower,
args, delay_load=False)``, ``is_loaded``, ``load_model(device_map=None)`` (sets ``image_processor``), ``forward(images)``
(a tensor or a list), ``feature_select``, ``dummy_feature``, ``dtype``, ``device``, ``config``, ``hidden_size``,
``num_patches_per_side``, ``num_patches``. Casting the tower (``.to(dtype=torch.float16)``, as LLaVA's loader and
trainer do) casts the CLIP encoder; the adapter stays fp32 on the tower's device and the codec fp32 on the
config's ``decode_device`` (it is not a submodule).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ...codec.configuration import CODEC_SUBFOLDER
from ...codec.loading import is_standard_codec, load_codec
from ...codec.model import CoTAMELIC
from ...errors import BitstreamFormatError, CheckpointError, ConfigError, CoTAMError, ImageInputError
from ...imageio import to_pil
from ...vision.adapter import ADAPTER_WEIGHTS, load_adapter_for, load_adapter_weights
from ...vision.tower import CoTAMVisionTower
from ...vision.tower_config import CoTAMTowerConfig, image_processor_from_dict

__all__ = [
    "TOWER_FILE",
    "TOWER_FORMAT",
    "CoTAMLlavaImageProcessor",
    "CoTAMLlavaVisionTower",
    "TowerFolder",
    "build_vision_tower",
    "is_cotam_tower",
    "resolve_cotam_tower",
    "read_tower_folder",
    "load_tower",
    "save_tower_folder",
    "make_tower_folder",
    "pack_into_pixels",
    "unpack_pixels",
    "is_packed_pixels",
    "add_encode_listener",
    "remove_encode_listener",
]

TOWER_FILE = "cotam_tower.json"
TOWER_FORMAT = "cotam-llava-tower"
TOWER_VERSION = 1
#: The encoders LLaVA 1.2.2's tower contract fits ('patch' drops the first token: a [CLS] token).
ENCODER_CLASSES = ("CLIPVisionModel",)

#: First 8 values of a packed tensor (far outside normalised pixels, which stay within about ±3).
PACK_MAGIC = b"CoTAMpk\x01"
_LEN_BYTES = 8
PACK_HEADER = len(PACK_MAGIC) + _LEN_BYTES


# --------------------------------------------------------------------------- packing bitstreams into "pixels"
def pack_into_pixels(stream: bytes, side: int) -> Tensor:
    """One container as a float32 (3, side, side) tensor LLaVA can carry like an image.

    Values (row-major): the 8-byte magic, the length (8 bytes, little-endian), the stream, zeros — one byte per
    value, so every value is an integer in [0, 255], which float16 and bfloat16 represent exactly.

    Raises:
        ConfigError: the stream does not fit (3·side² − 16 bytes).
    """
    capacity = 3 * side * side - PACK_HEADER
    if len(stream) > capacity:
        raise ConfigError(f"a {len(stream)}-byte bitstream does not fit a packed 3x{side}x{side} image "
                          f"(at most {capacity} bytes); code it at a lower quality")
    buf = np.zeros(3 * side * side, dtype=np.uint8)
    buf[: len(PACK_MAGIC)] = np.frombuffer(PACK_MAGIC, dtype=np.uint8)
    buf[len(PACK_MAGIC) : PACK_HEADER] = np.frombuffer(len(stream).to_bytes(_LEN_BYTES, "little"), dtype=np.uint8)
    buf[PACK_HEADER : PACK_HEADER + len(stream)] = np.frombuffer(bytes(stream), dtype=np.uint8)
    return torch.from_numpy(buf.astype(np.float32)).reshape(3, side, side)


def is_packed_pixels(image: Tensor) -> bool:
    """True when ``image`` (3, S, S) (any float dtype, any device) starts with the packing magic."""
    if not isinstance(image, Tensor) or not image.is_floating_point() or image.numel() < PACK_HEADER:
        return False
    head = image.reshape(-1)[: len(PACK_MAGIC)].detach().float().cpu().tolist()
    return head == [float(b) for b in PACK_MAGIC]


def unpack_pixels(image: Tensor) -> bytes:
    """Inverse of :func:`pack_into_pixels`.

    Raises:
        BitstreamFormatError: no magic, a length that does not fit, or values that are not bytes (the tensor was
            normalised, resized or cast to a type that cannot hold 0..255 exactly).
    """
    if not is_packed_pixels(image):
        raise BitstreamFormatError("not a packed CoTAM bitstream (the first values are not the packing magic)")
    flat = image.reshape(-1).detach().float().cpu()
    length = flat[len(PACK_MAGIC) : PACK_HEADER]
    n = int.from_bytes(length.to(torch.uint8).numpy().tobytes(), "little") if _are_bytes(length) else -1
    if n < 0 or n > flat.numel() - PACK_HEADER:
        raise BitstreamFormatError(f"packed bitstream: bad length field (the row holds {flat.numel() - PACK_HEADER} bytes)")
    body = flat[PACK_HEADER : PACK_HEADER + n]
    if not _are_bytes(body):
        raise BitstreamFormatError("packed bitstream: values are not bytes (0..255 integers); was the tensor "
                                   "normalised, resized or cast to a type that cannot hold them exactly?")
    return body.to(torch.uint8).numpy().tobytes()


def _are_bytes(values: Tensor) -> bool:
    return bool(((values >= 0) & (values <= 255) & (values == values.round())).all())


# --------------------------------------------------------------------------- tower folders
@dataclass(frozen=True)
class TowerFolder:
    """A parsed ``cotam_tower.json``."""

    path: Path
    cotam: CoTAMTowerConfig
    encoder_class: str


def is_cotam_tower(path: str | os.PathLike | None) -> bool:
    """True for a folder holding ``cotam_tower.json`` (what the patched LLaVA builder looks for)."""
    if not path:
        return False
    try:
        return (Path(path).expanduser() / TOWER_FILE).is_file()
    except (OSError, ValueError):
        return False


def resolve_cotam_tower(name: str | os.PathLike | None, config: Any = None) -> Path | None:
    """The CoTAM tower folder ``name`` refers to, or None (then LLaVA's own builder decides).

    A relative name is tried as given (from the working directory, as LLaVA does) and then relative to the model
    folder the config was loaded from (``config._name_or_path``), so a converted model folder can carry its tower
    inside (``mm_vision_tower: "cotam_tower"``).
    """
    if not name or not isinstance(name, (str, os.PathLike)):
        return None
    if is_cotam_tower(name):
        return Path(name).expanduser()
    base = getattr(config, "_name_or_path", None) if config is not None else None
    if base and not Path(name).is_absolute() and Path(str(base)).is_dir() and is_cotam_tower(Path(str(base)) / name):
        return Path(str(base)) / name
    return None


def read_tower_folder(path: str | os.PathLike) -> TowerFolder:
    """Read and validate a tower folder's ``cotam_tower.json``.

    Raises:
        CheckpointError: not a tower folder, an unknown format or version, an unsupported encoder, a bad config.
    """
    folder = Path(path).expanduser()
    file = folder / TOWER_FILE
    if not file.is_file():
        raise CheckpointError(f"{folder} is not a CoTAM tower folder (no {TOWER_FILE})")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != TOWER_FORMAT:
        raise CheckpointError(f"{file}: not a CoTAM tower description (format must be {TOWER_FORMAT!r})")
    unknown = set(data) - {"format", "version", "encoder_class", "cotam"}
    if unknown:
        raise CheckpointError(f"{file}: unknown keys {sorted(unknown)}")
    if data.get("version") != TOWER_VERSION:
        raise CheckpointError(f"{file}: version {data.get('version')!r} is not supported (this cotam_llava reads {TOWER_VERSION})")
    if data.get("encoder_class") not in ENCODER_CLASSES:
        raise CheckpointError(f"{file}: encoder_class {data.get('encoder_class')!r} is not supported by the LLaVA "
                              f"tower (supported: {', '.join(ENCODER_CLASSES)})")
    try:
        cotam = CoTAMTowerConfig.from_dict(data.get("cotam"))
    except (ConfigError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{file}: bad cotam entry: {exc}") from exc
    return TowerFolder(folder, cotam, data["encoder_class"])


def save_tower_folder(tower: CoTAMVisionTower, folder: str | os.PathLike) -> Path:
    """Write a tower (CLIP encoder, adapter, codec, configs) as a CoTAM tower folder; returns the folder."""
    name = type(tower.encoder).__name__
    if name not in ENCODER_CLASSES:
        raise ConfigError(f"the LLaVA tower supports {', '.join(ENCODER_CLASSES)} encoders, not {name}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tower.encoder.save_pretrained(out)
    tower.image_processor.save_pretrained(out)
    tower.adapter.save_pretrained(out)
    tower.codec.save_pretrained(out / CODEC_SUBFOLDER)
    description = {"format": TOWER_FORMAT, "version": TOWER_VERSION, "encoder_class": name,
                   "cotam": tower.cotam_config.to_dict()}
    (out / TOWER_FILE).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return out


def make_tower_folder(
    encoder: str | os.PathLike | nn.Module,
    codec: CoTAMELIC | str | os.PathLike,
    folder: str | os.PathLike,
    image_processor: Any = None,
    adapter: str | os.PathLike | None = None,
    quality: int = 6,
) -> Path:
    """A tower folder from a CLIP vision model (a folder with config.json + weights + preprocessor_config.json,
    or a loaded ``CLIPVisionModel``) and a codec; the adapter starts at zero unless ``adapter`` names a folder with
    ``adapter.safetensors`` (``cotam train-adapter``'s output)."""
    from types import SimpleNamespace

    from ...models.modeling_cotam import default_tower_config

    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} exists and is not an empty folder: choose a new output folder")
    if isinstance(encoder, nn.Module):
        model = encoder
    else:
        src = Path(encoder)
        if not (src / "config.json").is_file():
            raise CheckpointError(f"{src}: not a CLIP vision model folder (no config.json)")
        model = _load_clip(src, None)
    if type(model).__name__ not in ENCODER_CLASSES:
        raise ConfigError(f"the LLaVA tower supports {', '.join(ENCODER_CLASSES)} encoders, not {type(model).__name__}")
    if image_processor is None:
        if isinstance(encoder, nn.Module):
            raise ConfigError("give the encoder's image_processor when the encoder is a loaded model")
        from transformers import AutoImageProcessor

        image_processor = AutoImageProcessor.from_pretrained(str(encoder))
    codec_model = codec if isinstance(codec, CoTAMELIC) or is_standard_codec(codec) else load_codec(codec)
    config = default_tower_config(SimpleNamespace(vision_config=model.config), image_processor, codec_model, quality)
    state = None
    if adapter is not None:
        state = load_adapter_for(adapter, config.adapter)
    tower = CoTAMVisionTower(model.float(), config, codec_model)
    if state is not None:
        try:
            tower.adapter.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{adapter}: the adapter does not fit this encoder and codec: {exc}") from exc
    return save_tower_folder(tower, folder)


def _load_clip(folder: Path, device_map: Any) -> nn.Module:
    from transformers import CLIPVisionModel

    from ..._transformers import quiet_transformers

    kwargs = {"device_map": device_map} if device_map is not None else {}
    try:
        with quiet_transformers():
            model, info = CLIPVisionModel.from_pretrained(str(folder), output_loading_info=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: cannot load the CLIP encoder: {exc}") from exc
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise CheckpointError(f"{folder}: the CLIP encoder checkpoint lacks {len(missing)} weights (e.g. {missing[0]}); "
                              "refusing to initialise them at random")
    return model


def load_tower(folder: str | os.PathLike, device_map: Any = None) -> CoTAMVisionTower:
    """Load a tower folder: the CLIP encoder (fp32, on ``device_map``), the adapter (fp32, beside it), the codec
    (fp32, on the config's ``decode_device``).

    Raises:
        CheckpointError: a missing or malformed part.
    """
    info = read_tower_folder(folder)
    encoder = _load_clip(info.path, device_map).float()
    codec_dir = info.path / CODEC_SUBFOLDER
    if not (codec_dir / "config.json").is_file():
        raise CheckpointError(f"{info.path}: no codec checkpoint under {CODEC_SUBFOLDER}/")
    codec = load_codec(codec_dir)
    tower = CoTAMVisionTower(encoder, info.cotam)
    state = load_adapter_weights(info.path)
    try:
        tower.adapter.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{info.path / ADAPTER_WEIGHTS}: the adapter does not match {TOWER_FILE}: {exc}") from exc
    tower.adapter.to(next(encoder.parameters()).device)
    tower.set_codec(codec)
    return tower.eval()


# --------------------------------------------------------------------------- the image processor (edge side)
#: Called after every :meth:`CoTAMLlavaImageProcessor.preprocess` with [(the input image, its container bytes)].
_ENCODE_LISTENERS: list[Callable[[list[tuple[Any, bytes]]], None]] = []


def add_encode_listener(listener: Callable[[list[tuple[Any, bytes]]], None]) -> None:
    """Be told of every bitstream the LLaVA image processors make (e.g. to account the bits of an evaluation)."""
    if listener not in _ENCODE_LISTENERS:
        _ENCODE_LISTENERS.append(listener)


def remove_encode_listener(listener: Callable[[list[tuple[Any, bytes]]], None]) -> None:
    if listener in _ENCODE_LISTENERS:
        _ENCODE_LISTENERS.remove(listener)


class CoTAMLlavaImageProcessor:
    """What LLaVA's code calls ``image_processor``: pictures in, packed bitstreams out (the edge side).

    LLaVA reads ``image_mean`` (the pad colour of ``image_aspect_ratio=pad``), ``crop_size`` / ``size`` (AnyRes and
    the dummy images of text-only training samples) and calls ``preprocess(images, return_tensors='pt')`` (or the
    processor itself) for ``['pixel_values']``. Each picture is coded by the :class:`~cotam_llava.vision.edge.EdgeEncoder`
    at :attr:`quality` (the host processor's centre square at the codec canvas, guidance if the config names a
    model); ``bytes`` inputs are taken as ``.cotam`` containers and passed through. Every result is packed with
    :func:`pack_into_pixels` into a (3, S, S) float tensor, S = the CLIP input side.

    Attributes:
        quality: edge quality level 0..9 (default: the tower config's).
        last_streams: the containers of the last call, in order (their bits: ``8 * len(stream)``).
    """

    def __init__(self, config: CoTAMTowerConfig, codec: CoTAMELIC, quality: int | None = None) -> None:
        from ...vision.edge import EdgeEncoder
        from ...vision.views import view_side

        self.cotam_config = config
        self.host = image_processor_from_dict(config.image_processor)
        self.edge = EdgeEncoder(codec, config)
        self.quality = config.quality if quality is None else int(quality)
        side = view_side(config.image_processor)
        if not side:
            raise ConfigError("the tower's image processor has no square input side (crop_size / size)")
        self.side = int(side)
        self.image_mean = list(self.host.image_mean)
        self.image_std = list(self.host.image_std)
        self.crop_size = {"height": self.side, "width": self.side}
        size = getattr(self.host, "size", None)
        self.size = dict(size) if size else {"shortest_edge": self.side}
        self.last_streams: list[bytes] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(side={self.side}, quality={self.quality}, host={type(self.host).__name__})"

    def encode(self, image: Any) -> bytes:
        """One picture (PIL, array, path) → its ``.cotam`` bytes; ``bytes`` are returned as they are."""
        if isinstance(image, (bytes, bytearray, memoryview)):
            return bytes(image)
        try:
            pil = image if isinstance(image, Image.Image) else to_pil(image)
        except (TypeError, ValueError) as exc:
            raise ImageInputError(f"cannot read a picture from {type(image).__name__}: {exc}") from exc
        return self.edge.encode_image(pil.convert("RGB"), quality=self.quality)

    def preprocess(self, images: Any, return_tensors: str | None = None, **kwargs: Any) -> Any:
        """Code ``images`` (one picture / ``bytes`` or a list) → ``BatchFeature({"pixel_values": ...})``:
        a (N, 3, S, S) float32 tensor for ``return_tensors='pt'``, else a list of (3, S, S) numpy arrays.

        Raises:
            ConfigError: options this processor does not take (resizing, normalising: the codec decides those),
                or a bitstream too large to pack.
        """
        from transformers import BatchFeature

        if kwargs:
            raise ConfigError(f"CoTAMLlavaImageProcessor.preprocess takes no {', '.join(sorted(kwargs))} (the edge "
                              "encoder codes the picture; only return_tensors is accepted)")
        if return_tensors not in (None, "pt", "np"):
            raise ConfigError(f"return_tensors={return_tensors!r}: only 'pt', 'np' or None")
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ImageInputError("no images to preprocess")
        streams = [self.encode(item) for item in items]
        self.last_streams = streams
        for listener in list(_ENCODE_LISTENERS):
            listener(list(zip(items, streams)))
        packed = [pack_into_pixels(s, self.side) for s in streams]
        if return_tensors == "pt":
            return BatchFeature({"pixel_values": torch.stack(packed)})
        return BatchFeature({"pixel_values": [p.numpy() for p in packed]})

    __call__ = preprocess

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Save the host (CLIP) image processor's config: the tower folder rebuilds this processor itself."""
        self.host.save_pretrained(directory)


# --------------------------------------------------------------------------- the tower (cloud side)
class CoTAMLlavaVisionTower(nn.Module):
    """LLaVA's ``CLIPVisionTower`` contract over a :class:`~cotam_llava.vision.tower.CoTAMVisionTower` (paper §3.3).

    ``self.vision_tower`` is the CoTAM tower (CLIP encoder + adapter; codec outside the state dict), so the
    model's state dict holds ``model.vision_tower.vision_tower.encoder.*`` and ``...adapter.*``.

    Args:
        vision_tower: the tower folder (what ``mm_vision_tower`` names).
        args: LLaVA's model config or ``ModelArguments``: ``mm_vision_select_layer``, ``mm_vision_select_feature``
            ('patch': without [CLS]; 'cls_patch': with it), ``unfreeze_mm_vision_tower``.
        delay_load: read only the encoder config now (LLaVA builds towers this way inside ``from_pretrained``).
    """

    def __init__(self, vision_tower: str | os.PathLike, args: Any, delay_load: bool = False) -> None:
        super().__init__()
        self.is_loaded = False
        self.vision_tower_name = str(vision_tower)
        self.folder = read_tower_folder(vision_tower)
        self.select_layer = int(args.mm_vision_select_layer)
        self.select_feature = getattr(args, "mm_vision_select_feature", "patch")
        if self.select_feature not in ("patch", "cls_patch"):
            raise ConfigError(f"mm_vision_select_feature must be 'patch' or 'cls_patch', got {self.select_feature!r}")
        if not delay_load or getattr(args, "unfreeze_mm_vision_tower", False):
            self.load_model()
        else:
            from transformers import CLIPVisionConfig

            self.cfg_only = CLIPVisionConfig.from_pretrained(str(self.folder.path))

    def load_model(self, device_map: Any = None) -> None:
        if self.is_loaded:
            print(f"{self.vision_tower_name} is already loaded, `load_model` called again, skipping.")
            return
        tower = load_tower(self.folder.path, device_map=device_map)
        tower.requires_grad_(False)
        self.vision_tower = tower
        self.image_processor = CoTAMLlavaImageProcessor(tower.cotam_config, tower.codec)
        self.is_loaded = True

    # ------------------------------------------------------------------ precision: the adapter stays fp32
    def _apply(self, fn: Callable, recurse: bool = True) -> "CoTAMLlavaVisionTower":
        super()._apply(fn, recurse)
        if self.is_loaded:
            adapter = self.vision_tower.adapter
            if any(p.dtype != torch.float32 for p in adapter.parameters()):
                adapter.float()
        return self

    # ------------------------------------------------------------------ forward
    def feature_select(self, image_forward_outs: Any) -> Tensor:
        image_features = image_forward_outs.hidden_states[self.select_layer]
        if self.select_feature == "patch":
            image_features = image_features[:, 1:]
        return image_features

    def _features(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) packed bitstreams and/or normalised pixels → selected features (B, N, D)."""
        if not self.is_loaded:
            raise ConfigError("the CoTAM vision tower is not loaded: call load_model() first")
        if images.dim() != 4:
            raise ConfigError(f"the CoTAM vision tower takes (B, 3, S, S) images, got shape {tuple(images.shape)}")
        tower = self.vision_tower
        packed = [is_packed_pixels(image) for image in images]
        rows: list[Tensor | None] = [None] * images.shape[0]
        coded = [i for i, p in enumerate(packed) if p]
        if coded:
            decoded = tower.decode([unpack_pixels(images[i]) for i in coded])
            for i, items in zip(coded, decoded):
                if len(items) != 1:
                    raise CoTAMError(f"image {i}: a container with {len(items)} pictures (LLaVA takes one per image)")
            inputs = tower.host_inputs([items[0] for items in decoded], anyres=False)
            with tower.attached_latents(inputs.latents):
                feats = self.feature_select(tower(inputs.pixel_values, output_hidden_states=True))
            for j, i in enumerate(coded):
                rows[i] = feats[j]
        plain = [i for i, p in enumerate(packed) if not p]
        if plain:  # normalised pixels: compressed on the fly (the ŷ a bitstream would carry)
            feats = self.feature_select(tower(images[plain].float(), output_hidden_states=True))
            for j, i in enumerate(plain):
                rows[i] = feats[j]
        return torch.stack(rows)  # type: ignore[arg-type]

    @torch.no_grad()
    def forward(self, images: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
        """Selected hidden states for each image, in the images' dtype: (B, N, D) for a tensor, or a list of
        (1, N, D) for a list of (3, S, S) tensors (N = patches, + 1 for 'cls_patch')."""
        if type(images) is list:
            return [self._features(image.unsqueeze(0)).to(image.dtype) for image in images]
        return self._features(images).to(images.dtype)

    # ------------------------------------------------------------------ the rest of the contract
    @property
    def dummy_feature(self) -> Tensor:
        return torch.zeros(1, self.hidden_size, device=self.device, dtype=self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.encoder.dtype

    @property
    def device(self) -> torch.device:
        return self.vision_tower.encoder.device

    @property
    def config(self) -> Any:
        return self.vision_tower.encoder.config if self.is_loaded else self.cfg_only

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_patches_per_side(self) -> int:
        return self.config.image_size // self.config.patch_size

    @property
    def num_patches(self) -> int:
        return (self.config.image_size // self.config.patch_size) ** 2


def build_vision_tower(vision_tower_cfg: Any, **kwargs: Any) -> CoTAMLlavaVisionTower | None:
    """What the patched ``llava/model/multimodal_encoder/builder.py`` asks first: a CoTAM tower when
    ``mm_vision_tower`` (or ``vision_tower``) names a CoTAM tower folder, else None (LLaVA's own builder goes on)."""
    name = getattr(vision_tower_cfg, "mm_vision_tower", getattr(vision_tower_cfg, "vision_tower", None))
    path = resolve_cotam_tower(name, vision_tower_cfg)
    if path is None:
        return None
    return CoTAMLlavaVisionTower(str(path), args=vision_tower_cfg, **kwargs)
