"""CoTAM-enabled LLaVA, LLaVA-OneVision and InternVL: the stock transformers models with a CoTAM tower.

Each class subclasses its host's ``*ForConditionalGeneration`` and keeps its forward, generation, cache
and weight layout; the only changes are

* ``model.vision_tower`` is a :class:`~cotam_llava.vision.tower.CoTAMVisionTower` wrapping the host's own
  vision model (so ``vision_feature_layer`` / ``vision_feature_select_strategy`` work unchanged), and
* ``get_image_features`` / ``get_video_features`` accept bitstreams packed in ``pixel_values`` /
  ``pixel_values_videos`` (what :class:`~cotam_llava.models.CoTAMProcessor` produces)::

      packed bytes ─tower.decode─▶ x̂, ŷ ─host image processor on x̂ / same geometry on ŷ─▶ views, ŷ views
          ─attach ŷ views to the tower─▶ the host's own get_image_features(views) ─▶ projector ─▶ LLM

  Float ``pixel_values`` (the stock processor's output) still work: the tower compresses them on the fly.

Build one from a stock checkpoint and a codec with :meth:`from_host_pretrained`; ``save_pretrained``
writes one self-describing folder (``config.json`` with a ``cotam`` entry, ``model.safetensors`` with the
host and adapter weights, ``codec/``), which ``from_pretrained`` and
``AutoModelForImageTextToText.from_pretrained`` restore.

Weights on disk keep the host's own key layout: in memory the host's vision model sits one level down
(``model.vision_tower.encoder``), in the checkpoint it is ``vision_tower.<host keys>`` as the stock model
saves it, with the adapter beside it (``vision_tower.adapter.*``), so a stock ``from_pretrained`` of a CoTAM
folder reads the same vision weights. One checkpoint key conversion, registered after the host's own, maps
between the two; folders of earlier versions (``vision_tower.encoder.*``) are renamed on load.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    InternVLForConditionalGeneration,
    InternVLModel,
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionModel,
)
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import PrefixChange, WeightRenaming, WeightTransform

from .._transformers import require_hub
from ..codec.loading import is_standard_codec, load_codec, model_type_of
from ..codec.model import CoTAMELIC
from ..codec.standard import STANDARD_MODEL_TYPE
from ..encoders import family_for_model_type, num_prefix_tokens, pair
from ..errors import CheckpointError, ConfigError
from ..vision.adapter import PIXEL_STEM_CHANNELS, LatentAdapterConfig, load_adapter_for
from ..codec.transport import is_packed_bitstreams
from ..vision.tower import CoTAMVisionTower, HostVisionInputs
from ..vision.tower_config import CoTAMTowerConfig
from ..vision.views import LATENT_STRIDE, view_side
from .configuration_cotam import CODEC_SUBFOLDER, CoTAMInternVLConfig, CoTAMLlavaConfig, CoTAMLlavaOnevisionConfig

__all__ = [
    "CoTAMLlavaForConditionalGeneration",
    "CoTAMLlavaOnevisionForConditionalGeneration",
    "CoTAMInternVLForConditionalGeneration",
    "CoTAMLlavaModel",
    "CoTAMLlavaOnevisionModel",
    "CoTAMInternVLModel",
    "default_tower_config",
    "cotam_class_for",
]


#: In-memory tower key ↔ checkpoint key (after the host's own conversions): the host's vision model is
#: ``model.vision_tower.encoder`` here and ``model.vision_tower`` in the host's layout; the adapter keeps its name.
TOWER_RENAMING = (r"^model\.vision_tower\.(?!adapter\.)", "model.vision_tower.encoder.")
#: Key layouts written by earlier versions (the encoder one level down under ``encoder``, below the host
#: checkpoint's ``vision_model`` prefix where it had one) → the host's layout; applied on load only.
_LEGACY_KEY_MAPPING = {
    r"^vision_tower\.(?:vision_model\.)?encoder\.": "vision_tower.",
    r"^vision_tower\.vision_model\.adapter\.": "vision_tower.adapter.",
}
#: A key only the earlier layouts have (every supported encoder has ``embeddings``, none has ``encoder.embeddings``).
_LEGACY_KEY = re.compile(r"^vision_tower\.(?:vision_model\.)?encoder\.embeddings\.")
_HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "subfolder")

def default_tower_config(
    host_config: Any,
    image_processor: Any,
    codec: CoTAMELIC,
    quality: int = 6,
    guidance: dict[str, Any] | None = None,
    guidance_model: str | None = None,
) -> CoTAMTowerConfig:
    """The default CoTAM tower for a host: canvas = 16 × the patch grid (ŷ aligned 1:1 with the patches).

    AnyRes hosts (``image_grid_pinpoints``) code at native resolution instead, so their tiles keep detail.
    """
    vision = host_config.vision_config
    family = family_for_model_type(vision.model_type)
    grid = (view_side(image_processor) or pair(vision.image_size)[0]) // pair(vision.patch_size)[0]
    prefix = num_prefix_tokens(vision, family)
    if is_standard_codec(codec):  # no latent: the adapter reads the decoded picture through its stem
        shape = {"latent_channels": PIXEL_STEM_CHANNELS, "num_qualities": codec.num_qualities, "input": "pixels"}
    else:
        shape = {"latent_channels": codec.config.M, "num_qualities": codec.config.num_qualities}
    adapter = LatentAdapterConfig(hidden_size=vision.hidden_size, grid=(grid, grid), num_prefix_tokens=prefix, **shape)
    anyres = bool(getattr(image_processor, "image_grid_pinpoints", None))
    canvas = None if anyres else -(-LATENT_STRIDE * grid // 64) * 64
    processor_dict = image_processor.to_dict()
    if "crop_to_patches" in processor_dict:
        processor_dict["crop_to_patches"] = False  # InternVL tiling is not supported on the CoTAM path yet
    return CoTAMTowerConfig(
        adapter=adapter.to_dict(),
        image_processor=processor_dict,
        canvas_size=canvas,
        center_crop=bool(getattr(image_processor, "do_center_crop", False)),
        quality=quality,
        guidance=guidance,
        guidance_model=guidance_model,
    )


# --------------------------------------------------------------------------- base models (the *Model level)
class _CoTAMBaseMixin:
    """Bitstream handling at the level where hosts (and ``generate``) ask for image features."""

    vision_tower: CoTAMVisionTower

    def _cotam_views(self, packed: torch.Tensor, anyres: bool | list[bool]) -> HostVisionInputs:
        return self._cotam_views_of([item for items in self.vision_tower.decode(packed) for item in items], anyres)

    def _cotam_views_of(self, decoded: list[Any], anyres: bool | list[bool]) -> HostVisionInputs:
        """The host's views of decoded images (AnyRes-tiled or not: one flag for all, or one per image)."""
        tower = self.vision_tower
        if isinstance(anyres, bool):
            return tower.host_inputs(decoded, anyres=anyres)
        parts = [tower.host_inputs([d], anyres=a) for d, a in zip(decoded, anyres)]
        return HostVisionInputs(
            pixel_values=torch.cat([p.pixel_values for p in parts]),
            latents=torch.cat([p.latents for p in parts]),
            image_sizes=torch.cat([p.image_sizes for p in parts]),
            views_per_image=[n for p in parts for n in p.views_per_image],
            decoded=decoded,
        )

    def _cotam_set_output_dtype(self) -> None:
        self.vision_tower.output_dtype = self.get_input_embeddings().weight.dtype

    def _cotam_image_features(
        self,
        host_method: Any,
        pixel_values: torch.Tensor,
        host_kwargs: dict[str, Any],
        anyres: bool | list[bool],
        pixel_only: dict[str, Any] | None = None,
        view_sizes: bool = False,
    ):
        """The host's ``get_image_features`` on pixels, or on the views decoded from packed bitstreams.

        Args:
            host_method: the host class's bound ``get_image_features``.
            pixel_values: pixels, or bitstreams packed by the processor (:func:`is_packed_bitstreams`).
            host_kwargs: the host's keyword arguments, passed either way.
            anyres: whether each decoded image is AnyRes-tiled into views (one flag for all, or one per image).
            pixel_only: arguments passed only with pixels (the caller's ``image_sizes``).
            view_sizes: with bitstreams, pass the decoded views' ``image_sizes`` (AnyRes hosts).
        """
        self._cotam_set_output_dtype()
        if not is_packed_bitstreams(pixel_values):
            return host_method(pixel_values=pixel_values, **host_kwargs, **(pixel_only or {}))
        return self._cotam_features_of(host_method, self._cotam_views(pixel_values, anyres=anyres), host_kwargs,
                                       view_sizes)

    def _cotam_features_of(self, host_method: Any, views: HostVisionInputs, host_kwargs: dict[str, Any],
                           view_sizes: bool = False):
        """The host's ``get_image_features`` on decoded views, their ŷ attached for the adapter."""
        extra = {"image_sizes": views.image_sizes.to(self.device)} if view_sizes else {}
        with self.vision_tower.attached_latents(views.latents):
            return host_method(pixel_values=views.pixel_values, **host_kwargs, **extra)


class CoTAMLlavaModel(_CoTAMBaseMixin, LlavaModel):
    """``LlavaModel`` whose ``get_image_features`` also takes packed bitstreams."""

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        image_sizes: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        host = dict(vision_feature_layer=vision_feature_layer,
                    vision_feature_select_strategy=vision_feature_select_strategy, **kwargs)
        return self._cotam_image_features(super().get_image_features, pixel_values, host, anyres=False,
                                          pixel_only={"image_sizes": image_sizes})


class CoTAMLlavaOnevisionModel(_CoTAMBaseMixin, LlavaOnevisionModel):
    """``LlavaOnevisionModel`` whose image (AnyRes) and video features also take packed bitstreams."""

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_sizes: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        vision_aspect_ratio: str | None = None,
        batch_num_images: torch.LongTensor | None = None,
        **kwargs: Any,
    ):
        host = dict(vision_feature_layer=vision_feature_layer, vision_feature_select_strategy=vision_feature_select_strategy,
                    vision_aspect_ratio=vision_aspect_ratio, batch_num_images=batch_num_images, **kwargs)
        # one image per sample is AnyRes-tiled, several are not (LLaVA-OneVision's own rule)
        anyres = ([True] * pixel_values.shape[0] if batch_num_images is None
                  else [int(n) == 1 for n in batch_num_images for _ in range(int(n))])
        return self._cotam_image_features(super().get_image_features, pixel_values, host, anyres=anyres,
                                          pixel_only={"image_sizes": image_sizes}, view_sizes=True)

    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs: Any,
    ):
        self._cotam_set_output_dtype()
        if is_packed_bitstreams(pixel_values_videos):
            return self._cotam_video_features(self.vision_tower.decode(pixel_values_videos),
                                              vision_feature_layer=vision_feature_layer,
                                              vision_feature_select_strategy=vision_feature_select_strategy, **kwargs)
        return super().get_video_features(
            pixel_values_videos=pixel_values_videos,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **kwargs,
        )

    def _cotam_video_features(self, videos: list[list[Any]], **host_kwargs: Any):
        """The host's ``get_video_features`` on decoded videos (each a list of frames; all the same length)."""
        tower = self.vision_tower
        counts = {len(frames) for frames in videos}
        if len(counts) != 1:
            raise ConfigError(f"videos in one batch must have the same number of frames, got {sorted(counts)}")
        frames = tower.frame_inputs([f for v in videos for f in v])
        pixels = frames.pixel_values.reshape(len(videos), counts.pop(), *frames.pixel_values.shape[1:])
        with tower.attached_latents(frames.latents):
            return LlavaOnevisionModel.get_video_features(self, pixel_values_videos=pixels, **host_kwargs)


class CoTAMInternVLModel(_CoTAMBaseMixin, InternVLModel):
    """``InternVLModel`` whose ``get_image_features`` also takes packed bitstreams (one 448² view per image)."""

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs: Any,
    ):
        host = dict(vision_feature_layer=vision_feature_layer,
                    vision_feature_select_strategy=vision_feature_select_strategy, **kwargs)
        return self._cotam_image_features(super().get_image_features, pixel_values, host, anyres=False)


# --------------------------------------------------------------------------- generation models
class _CoTAMGenerationMixin:
    """Shared by the three ``*ForConditionalGeneration`` classes."""

    _cotam_host_class: type
    _cotam_base_class: type
    # the tower (encoder + adapter) stays fp32 for fp16/bf16 loads, and out of bitsandbytes quantization
    # (transformers skips ``_keep_in_fp32_modules`` when quantizing); cast it yourself to run it in half precision
    _keep_in_fp32_modules = ["model.vision_tower"]
    _keep_in_fp32_modules_strict = ["model.vision_tower"]

    def __init__(self, config: Any) -> None:
        super().__init__(config)  # the host class builds everything as usual
        self._install_cotam(config)

    def _install_cotam(self, config: Any) -> None:
        if not config.cotam:
            raise ConfigError(
                f"{type(self).__name__} needs config.cotam (build one with from_host_pretrained or default_tower_config)"
            )
        base = self.model
        base.__class__ = self._cotam_base_class  # adds methods only; the host's modules stay as built
        if not isinstance(base.vision_tower, CoTAMVisionTower):
            base.vision_tower = CoTAMVisionTower(base.vision_tower, CoTAMTowerConfig.from_dict(config.cotam))

    @property
    def vision_tower(self) -> CoTAMVisionTower:
        return self.model.vision_tower

    @property
    def codec(self) -> CoTAMELIC:
        return self.model.vision_tower.codec

    def _init_weights(self, module: nn.Module) -> None:
        # the adapter has its own initialisation (zero output projection); the host's would randomise it
        adapter = self.model.vision_tower.adapter if isinstance(self.model.vision_tower, CoTAMVisionTower) else None
        if adapter is not None:
            if module is adapter:
                adapter.reset_parameters()
                return
            if any(module is m for m in adapter.modules()):
                return
        super()._init_weights(module)

    @property
    def dtype(self) -> torch.dtype:
        """The language model's dtype: what ``save_pretrained`` records and a reload defaults to (the tower stays fp32)."""
        return self.get_input_embeddings().weight.dtype

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """Save config.json (host + cotam), model.safetensors (host + adapter) and the codec under ``codec/``.

        The weights keep the host's key layout (the tower's encoder as ``vision_tower.<host keys>``, the adapter
        as ``vision_tower.adapter.*``); ``config.dtype`` is the language model's.
        """
        from .lora import has_unmerged_lora

        if has_unmerged_lora(self):
            raise ConfigError("this model carries unmerged LoRA weights (from lora/): load it with "
                              "from_pretrained(folder, merge_lora=True) to save a merged folder, or copy the folder")
        super().save_pretrained(save_directory, *args, **kwargs)
        self.codec.save_pretrained(Path(save_directory) / CODEC_SUBFOLDER)
        _write_model_card(Path(save_directory), self)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, codec: CoTAMELIC | str | None = None,
                        apply_lora: bool = True, merge_lora: bool = False, **kwargs: Any):
        """Load a folder saved by :meth:`save_pretrained` (host weights, adapter, ``codec/``) and, when it has one, the
        fine-tuned LoRA weights in ``lora/`` (the PEFT layout ``cotam train-mllm`` writes; see :mod:`.lora`).

        ``device_map``, ``dtype`` (default: the saved one) and ``quantization_config`` apply to the host as usual;
        the tower is kept in fp32 and left out of quantization, and the codec is loaded fp32 onto the tower's
        ``decode_device``. Folders of earlier versions (tower keys under ``vision_tower.encoder.``) load too.

        Args:
            codec: a codec (or its folder) to use instead of the one saved under ``codec/``.
            apply_lora: apply ``lora/`` when present (unmerged: LoRA layers in place; the model keeps its class).
            merge_lora: fold ``lora/`` into the weights instead (plain modules, the same outputs; saveable).

        Raises:
            CheckpointError: the checkpoint lacks weights of the vision tower (instead of initialising them at random),
                or its ``lora/`` is incomplete or does not fit.
        """
        legacy = any(_LEGACY_KEY.match(k) for k in _checkpoint_keys(pretrained_model_name_or_path, kwargs))
        if legacy:
            kwargs["key_mapping"] = {**_LEGACY_KEY_MAPPING, **(kwargs.get("key_mapping") or {})}
        with_info = kwargs.pop("output_loading_info", False)
        _keep_unquantized(kwargs)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        missing = sorted(k for k in info["missing_keys"] if k.startswith("model.vision_tower."))
        if missing:
            raise CheckpointError(
                f"{pretrained_model_name_or_path}: the checkpoint lacks {len(missing)} weights of the CoTAM vision tower "
                f"(e.g. {missing[0]}); it was not saved by a CoTAM model's save_pretrained"
            )
        if legacy:  # saving writes the host's layout, not the old one
            model._weight_conversions = [c for c in model._weight_conversions
                                         if not (type(c) is WeightRenaming and c.source_patterns[0] in _LEGACY_KEY_MAPPING)]
        model.vision_tower.set_codec(_load_codec(codec if codec is not None else pretrained_model_name_or_path, codec is None, kwargs))
        if apply_lora:
            from .lora import apply_lora as _apply_lora, find_lora

            lora = find_lora(pretrained_model_name_or_path, {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs})
            if lora is not None:
                model = _apply_lora(model, lora, merge=merge_lora)
        return (model, info) if with_info else model

    @classmethod
    def from_host_pretrained(
        cls,
        host: str | os.PathLike,
        codec: CoTAMELIC | str | os.PathLike,
        image_processor: Any = None,
        adapter: str | os.PathLike | None = None,
        quality: int = 6,
        guidance: dict[str, Any] | None = None,
        guidance_model: str | None = None,
        **kwargs: Any,
    ):
        """A CoTAM model from a stock checkpoint (hub id or folder) and a codec.

        Args:
            host: a LLaVA / LLaVA-OneVision / InternVL checkpoint of the matching class.
            codec: finalized codec or its folder.
            image_processor: the host's image processor (default: loaded from ``host``).
            adapter: folder of a trained adapter (``adapter.safetensors``); default: zero-initialised.
            quality, guidance, guidance_model: edge defaults stored in the config.
            **kwargs: passed to the host's ``from_pretrained`` (``device_map``, ``dtype``, ``quantization_config``...).
        """
        from transformers import AutoImageProcessor

        hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        if not hub.get("local_files_only"):
            require_hub(host, hub.get("cache_dir"), hub.get("revision"), hub.get("subfolder"))
        if "cotam" in cls._cotam_host_class.config_class.get_config_dict(host, **hub)[0]:
            raise CheckpointError(f"{host} is a saved CoTAM model, not a stock host: load it with "
                                  f"{cls.__name__}.from_pretrained({str(host)!r})")
        codec_model = codec if _is_codec(codec) else load_codec(codec)
        if image_processor is None:
            image_processor = AutoImageProcessor.from_pretrained(host)
        _keep_unquantized(kwargs)
        model = cls._cotam_host_class.from_pretrained(host, **kwargs)
        tower = default_tower_config(model.config, image_processor, codec_model, quality, guidance, guidance_model)
        adapter_state = load_adapter_for(adapter, tower.adapter) if adapter is not None else None
        config_dict = model.config.to_dict()
        config_dict.pop("model_type", None)
        config = cls.config_class.from_dict({**config_dict, "cotam": tower.to_dict()})
        host_conversions = getattr(model, "_weight_conversions", None) or []
        model.__class__ = cls
        model.config = config
        model._install_cotam(config)
        model._weight_conversions = _saving_conversions(model, host_conversions)
        device = next(model.model.vision_tower.encoder.parameters()).device
        model.model.vision_tower.to(device=device, dtype=torch.float32)
        if adapter_state is not None:
            try:
                model.vision_tower.adapter.load_state_dict(adapter_state)
            except RuntimeError as exc:
                raise CheckpointError(f"{adapter}: the adapter does not fit this host and codec: {exc}") from exc
        model.vision_tower.set_codec(codec_model)
        return model


def _checkpoint_keys(source: str | os.PathLike, kwargs: dict[str, Any]) -> list[str]:
    """The weight names of a checkpoint (safetensors header or shard index only; [] when neither is found)."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
    index = cached_file(source, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False, **hub)
    if index is not None:
        return list(json.loads(Path(index).read_text())["weight_map"])
    single = cached_file(source, "model.safetensors", _raise_exceptions_for_missing_entries=False, **hub)
    if single is None:
        return []
    with safe_open(single, "pt") as f:
        return list(f.keys())


def _saving_conversions(model: nn.Module, host_conversions: list[WeightTransform]) -> list[WeightTransform]:
    """The checkpoint conversions of a CoTAM model made from a loaded host: its own (host + tower renaming), with
    the optional prefixes (``PrefixChange``, e.g. CLIP's ``vision_model``) the host checkpoint had, so that
    ``save_pretrained`` writes the host checkpoint's layout."""
    def prefix(c: PrefixChange) -> tuple[str | None, str | None, str]:
        return c.prefix_to_add, c.prefix_to_remove, c.model_prefix

    used = {prefix(c) for c in host_conversions if isinstance(c, PrefixChange)}
    return [c for c in get_model_conversion_mapping(model, add_legacy=False)
            if not isinstance(c, PrefixChange) or prefix(c) in used]


def _write_model_card(folder: Path, model: Any) -> None:
    """A ``README.md`` saying how to load the folder (``import cotam_llava`` first: transformers alone does not know
    the model type; see docs/mllm.md, "Registration"), unless the folder already has one (the user's own card)."""
    card = folder / "README.md"
    if card.exists():
        return
    codec = model.codec
    codec_id = codec.codec_id.hex() if hasattr(codec, "codec_id") else type(codec).__name__
    card.write_text(f"""---
library_name: cotam-llava
pipeline_tag: image-text-to-text
tags: [cotam, image-compression, bitstream]
---
# A CoTAM {type(model).__name__.replace("CoTAM", "").replace("ForConditionalGeneration", "")} model

It reads `.cotam` bitstreams: its vision tower decodes them with the codec in `codec/` (codec id `{codec_id}`)
and feeds the host's vision encoder the decoded picture plus the adapter's enhancement. transformers alone does
not know its `model_type` (`{model.config.model_type}`): install `cotam-llava` and import it first.

```python
import cotam_llava  # registers the CoTAM classes with transformers' Auto classes
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("THIS_FOLDER_OR_HUB_ID")
processor = AutoProcessor.from_pretrained("THIS_FOLDER_OR_HUB_ID")  # when the processor was saved here too
```

The weights keep the host's key layout; `codec/` holds the codec (`config.json` + `model.safetensors`).
""")


def _keep_unquantized(kwargs: dict[str, Any]) -> None:
    """Under a bitsandbytes ``quantization_config``, keep the vision tower, the projector and ``lm_head`` in full
    precision — the same choice on both loading paths (a host + codec, or a saved CoTAM folder), as LLaVA's own
    QLoRA training skips ``mm_projector``: the projector is small and sits between the fp32 tower and the LM."""
    quantization = kwargs.get("quantization_config")
    if quantization is not None and hasattr(quantization, "llm_int8_skip_modules"):
        skip = list(quantization.llm_int8_skip_modules or [])
        # module names match from the start (transformers.quantizers.quantizers_utils.should_convert_module)
        keep = {"model.vision_tower", "model.multi_modal_projector", "lm_head"}
        quantization.llm_int8_skip_modules = sorted(set(skip) | keep)


def _is_codec(obj: Any) -> bool:
    return isinstance(obj, CoTAMELIC) or is_standard_codec(obj)


def _load_codec(source: Any, in_subfolder: bool, kwargs: dict[str, Any]) -> Any:
    """The codec object, or the one in a folder (a CoTAM model's ``codec/`` when ``in_subfolder``, also from the hub),
    or the standard base named ``hevc`` / ``av1``."""
    if _is_codec(source):
        return source
    path = Path(source)
    if in_subfolder:
        if path.is_dir():
            path = path / CODEC_SUBFOLDER
        else:  # a hub id: fetch the codec files beside the model's (a standard base has no weights)
            from transformers.utils import cached_file

            hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
            path = Path(cached_file(str(source), f"{CODEC_SUBFOLDER}/config.json", **hub)).parent
            if model_type_of(path) != STANDARD_MODEL_TYPE:
                cached_file(str(source), f"{CODEC_SUBFOLDER}/model.safetensors", **hub)
    elif not path.exists():
        return load_codec(source)  # "hevc" / "av1" (anything else fails there with our error)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"no codec checkpoint at {path} (a CoTAM model folder holds its codec under {CODEC_SUBFOLDER}/)")
    return load_codec(path)


class CoTAMLlavaForConditionalGeneration(_CoTAMGenerationMixin, LlavaForConditionalGeneration):
    """LLaVA (CLIP + Llama) reading CoTAM bitstreams. See the module docstring."""

    config_class = CoTAMLlavaConfig
    _cotam_host_class = LlavaForConditionalGeneration
    _cotam_base_class = CoTAMLlavaModel


class CoTAMLlavaOnevisionForConditionalGeneration(_CoTAMGenerationMixin, LlavaOnevisionForConditionalGeneration):
    """LLaVA-OneVision (SigLIP + Qwen2; AnyRes images and video) reading CoTAM bitstreams."""

    config_class = CoTAMLlavaOnevisionConfig
    _cotam_host_class = LlavaOnevisionForConditionalGeneration
    _cotam_base_class = CoTAMLlavaOnevisionModel


class CoTAMInternVLForConditionalGeneration(_CoTAMGenerationMixin, InternVLForConditionalGeneration):
    """InternVL (InternViT + Qwen2) reading CoTAM bitstreams (one view per image)."""

    config_class = CoTAMInternVLConfig
    _cotam_host_class = InternVLForConditionalGeneration
    _cotam_base_class = CoTAMInternVLModel


BY_HOST = {
    "llava": CoTAMLlavaForConditionalGeneration,
    "llava_onevision": CoTAMLlavaOnevisionForConditionalGeneration,
    "internvl": CoTAMInternVLForConditionalGeneration,
}


def cotam_class_for(host_model_type: str) -> type:
    """The CoTAM class for a host ``model_type`` ("llava", "llava_onevision", "internvl")."""
    try:
        return BY_HOST[host_model_type]
    except KeyError:
        raise ConfigError(f"no CoTAM integration for {host_model_type!r}; supported: {', '.join(BY_HOST)}") from None
