"""``CoTAMVisionTower``: bitstreams in, the stock vision tower's outputs out (paper §3.3, Fig. 5).

::

    .cotam bytes ─parse, validate, entropy-decode (CPU by default)─▶ x̂ (picture), ŷ (M, Hc/16, Wc/16)
        x̂ ─host image processor (exactly as for a stock image)─▶ pixel views (n, 3, S, S)
        ŷ ─same geometry (views.py), resampled to the patch grid─▶ (n, M, gh, gw) ─adapter─▶ Δ (n, P + gh·gw, D)
        encoder(pixel views) with Δ added to its embedding output ─▶ the stock encoder's output
                                                                     (hidden_states for vision_feature_layer)

Over a standard base (hevc / av1, no latent) the adapter reads x̂ through its pixel stem instead of ŷ
(``adapter.input = "pixels"``); the views, the quality plane and the rest of the flow are the same.

The tower wraps the host's own vision model (``encoder``) and adds a :class:`LatentFeatureAdapter`.
Inputs to :meth:`CoTAMVisionTower.forward`:

* bitstreams — ``bytes``, a list of them, parsed :class:`~cotam_llava.codec.container.Container` objects, or
  the packed ``uint8`` tensor :func:`~cotam_llava.codec.transport.pack_bitstreams` makes (what :class:`~cotam_llava.models.CoTAMProcessor`
  puts in ``pixel_values``) — one view per image (the host's plain preprocessing);
* normalised pixel views while :meth:`attached_latents` is active — how a host model's own
  ``get_image_features`` calls the tower once the CoTAM model has decoded the bitstreams and cut the views;
* other normalised pixel views — compressed on the fly (codec forward in eval mode: the same ŷ a real
  bitstream would carry) at ``quality``; for simulation and training. With ``compress_pixels = False`` they
  go to the stock encoder unchanged (classical-codec baselines, the uncompressed reference).

``adapter_enabled = False`` drops the enhancement (x̂ alone: the base codec ablation); :meth:`CoTAMVisionTower.variant`
sets either flag for a ``with`` block and restores it.

The codec is deliberately not a registered submodule: its weights and finalized CDF tables live in their
own checkpoint (``codec/``), it stays fp32 on ``decode_device`` whatever ``.to()`` or quantization does
to the host, and it is never part of the host's state dict.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
import torch.nn.functional as F
from torch import Tensor, nn

from ..codec.container import Container, ParseLimits, parse
from ..codec.loading import is_standard_codec
from ..codec.model import CoTAMELIC
from ..codec.pipeline import DecodedImage, decode_container
from ..codec.quality_map import QualityMap
from ..codec.standard import StandardCodec
from ..codec.transport import is_packed_bitstreams, unpack_bitstreams
from ..encoders import EncoderSpec, encoder_spec
from ..errors import ConfigError, CoTAMError
from ..imageio import to_pil
from .adapter import LatentAdapterConfig, LatentFeatureAdapter
from .tower_config import CoTAMTowerConfig, image_processor_from_dict
from .embedding_delta import run_with_embedding_delta
from .views import LATENT_STRIDE, full_box, sample_latent, view_boxes, view_side

__all__ = ["CoTAMVisionTower", "HostVisionInputs"]

BitstreamInput = bytes | bytearray | Container | Sequence[bytes | bytearray | Container]


# --------------------------------------------------------------------------- the tower
@dataclass
class HostVisionInputs:
    """Decoded bitstreams turned into what a host model's vision path expects.

    Attributes:
        pixel_values: (n_views, 3, S, S) normalised views of x̂, in the host processor's order.
        latents: (n_views, M, gh, gw) ŷ cut and resampled the same way.
        image_sizes: (n_images, 2) picture (height, width) — what AnyRes hosts need.
        views_per_image: number of views of each image.
        decoded: the decoded images (x̂ canvases, ŷ, headers).
    """

    pixel_values: Tensor
    latents: Tensor
    image_sizes: Tensor
    views_per_image: list[int]
    decoded: list[DecodedImage] = field(repr=False)


class CoTAMVisionTower(nn.Module):
    """The cloud side of CoTAM as a drop-in vision tower (see the module docstring for the data flow).

    Args:
        encoder: the host's vision model (CLIPVisionModel, SiglipVisionModel, InternVLVisionModel, Dinov2Model).
        config: :class:`CoTAMTowerConfig`.
        codec: the finalized codec whose bitstreams this tower reads (may be set later with :meth:`set_codec`).
    """

    def __init__(self, encoder: nn.Module, config: CoTAMTowerConfig, codec: CoTAMELIC | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.cotam_config = config
        self.adapter = LatentFeatureAdapter(LatentAdapterConfig.from_dict(config.adapter))
        self.output_dtype: torch.dtype | None = None
        #: False: no enhancement (x̂ alone feeds the encoder) — the "no adapter" ablation.
        self.adapter_enabled = True
        #: False: pixel views without attached latents go to the stock encoder as they are (for classical
        #: codecs and the uncompressed reference) instead of being compressed on the fly.
        self.compress_pixels = True
        self.limits = ParseLimits()
        self.__dict__["_codec"] = None
        self.__dict__["_image_processor"] = None
        self.__dict__["_pending"] = []
        if codec is not None:
            self.set_codec(codec)

    # ------------------------------------------------------------------ wiring
    @property
    def config(self) -> Any:
        """The encoder's transformers config (hosts read ``vision_tower.config``)."""
        return self.encoder.config

    @property
    def spec(self) -> EncoderSpec:
        return encoder_spec(self.encoder)

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    @property
    def input_side(self) -> int:
        """Side of the encoder's square input views: the host image processor's, else the encoder config's."""
        return view_side(self.cotam_config.image_processor) or self.spec.image_size

    @property
    def grid(self) -> tuple[int, int]:
        """The encoder's patch grid (rows, cols) at :attr:`input_side` — where ŷ is resampled to."""
        g = self.input_side // self.spec.patch_size
        return g, g

    @property
    def codec(self) -> CoTAMELIC | StandardCodec:
        codec = self.__dict__["_codec"]
        if codec is None:
            raise ConfigError("this CoTAM tower has no codec: load one with set_codec() or from a CoTAM checkpoint")
        return codec

    def set_codec(self, codec: CoTAMELIC | StandardCodec) -> None:
        """Attach the codec (a learned one is kept fp32 on ``decode_device``, outside the state dict)."""
        adapter = self.adapter.config
        if is_standard_codec(codec):
            if not adapter.reads_pixels:
                raise ConfigError(f"a {codec.kind} base has no latent, and this tower's adapter reads ŷ: build the tower "
                                  "over the standard codec (its adapter then reads the decoded picture)")
            self.__dict__["_codec"] = codec
            return
        m = codec.config.M
        if not adapter.reads_pixels and m != adapter.latent_channels:
            raise ConfigError(f"codec has M={m} latent channels, the adapter expects {adapter.latent_channels}")
        codec.eval()
        self.__dict__["_codec"] = codec.to(device=self.cotam_config.decode_device, dtype=torch.float32)

    @property
    def image_processor(self) -> Any:
        if self.__dict__["_image_processor"] is None:
            self.__dict__["_image_processor"] = image_processor_from_dict(self.cotam_config.image_processor)
        return self.__dict__["_image_processor"]

    @property
    def device(self) -> torch.device:
        return next(self.adapter.parameters()).device

    @contextmanager
    def variant(self, adapter: bool | None = None, compress_pixels: bool | None = None) -> Iterator["CoTAMVisionTower"]:
        """Run a variant of the tower for the duration of a ``with`` block, restored afterwards (also on errors).

        Args:
            adapter: False drops the enhancement (x̂ alone: the base-codec ablation); None keeps the setting.
            compress_pixels: False sends pixel views without attached latents to the stock encoder unchanged
                (classical codecs, the uncompressed reference); None keeps the setting.
        """
        saved = (self.adapter_enabled, self.compress_pixels)
        if adapter is not None:
            self.adapter_enabled = bool(adapter)
        if compress_pixels is not None:
            self.compress_pixels = bool(compress_pixels)
        try:
            yield self
        finally:
            self.adapter_enabled, self.compress_pixels = saved

    @contextmanager
    def attached_latents(self, latents: Tensor) -> Iterator[None]:
        """Within this block, the next pixel-tensor call uses ``latents`` (n_views, M, gh, gw) for its views."""
        self.__dict__["_pending"].append(latents)
        try:
            yield
        finally:
            if self.__dict__["_pending"] and self.__dict__["_pending"][-1] is latents:
                self.__dict__["_pending"].pop()

    # ------------------------------------------------------------------ cloud: decode and cut views
    def decode(self, bitstreams: BitstreamInput | Tensor) -> list[list[DecodedImage]]:
        """Parse, validate and decode bitstreams: one list of decoded items (images or frames) per container."""
        if is_packed_bitstreams(bitstreams):
            bitstreams = unpack_bitstreams(bitstreams)  # type: ignore[arg-type]
        if isinstance(bitstreams, (bytes, bytearray, Container)):
            bitstreams = [bitstreams]
        out = []
        with torch.no_grad():
            for stream in bitstreams:  # type: ignore[union-attr]
                container = stream if isinstance(stream, Container) else parse(bytes(stream), self.limits)
                out.append(decode_container(self.codec, container))
        return out

    def host_inputs(self, decoded: Sequence[DecodedImage], anyres: bool = True) -> HostVisionInputs:
        """Turn decoded images into the host's pixel views (its own image processor) and the matching ŷ views."""
        processor = self.image_processor
        pixels, latents, sizes, counts = [], [], [], []
        grid = self.grid
        for dec in decoded:
            x = dec.picture
            h, w = x.shape[-2:]
            boxes = view_boxes(processor, w, h, anyres=anyres)
            feats = processor(images=[to_pil(x)], return_tensors="pt")
            pv = feats["pixel_values"]
            pv = pv.reshape(-1, *pv.shape[-3:])[: len(boxes)]
            if pv.shape[0] != len(boxes):
                raise CoTAMError(f"the host image processor made {pv.shape[0]} views, CoTAM expected {len(boxes)}")
            pixels.append(pv)
            latents.append(sample_latent(self._adapter_input(self._latent_of(dec), dec.quality), boxes, grid))
            sizes.append((h, w))
            counts.append(len(boxes))
        return HostVisionInputs(
            pixel_values=torch.cat(pixels),
            latents=torch.cat(latents),
            image_sizes=torch.tensor(sizes, dtype=torch.long),
            views_per_image=counts,
            decoded=list(decoded),
        )

    def frame_inputs(self, decoded: Sequence[DecodedImage]) -> HostVisionInputs:
        """Video frames: each frame resized to the encoder's square input (as video processors do), one view each."""
        side = self.input_side
        mean, std = self._normalization(torch.device("cpu"))
        pixels, latents, sizes = [], [], []
        for dec in decoded:
            x = dec.picture
            h, w = x.shape[-2:]
            frame = to_pil(x).resize((side, side), Image.BICUBIC)  # 8-bit PIL bicubic, as the host processors resample
            pv = torch.from_numpy(np.asarray(frame, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
            pixels.append((pv - mean) / std)
            latents.append(sample_latent(self._adapter_input(self._latent_of(dec), dec.quality), [full_box(w, h)], self.grid))
            sizes.append((h, w))
        return HostVisionInputs(torch.cat(pixels), torch.cat(latents), torch.tensor(sizes), [1] * len(decoded), list(decoded))

    def _latent_of(self, dec: DecodedImage) -> Tensor:
        """What the adapter reads of a decoded item on its whole canvas: ŷ, or the pixel stem's features of x̂."""
        if self.adapter.config.reads_pixels:
            return self.adapter.features(dec.x_hat.to(self.device))
        return dec.y_hat.float()

    # ------------------------------------------------------------------ on-the-fly compression
    def simulate(
        self, images: Tensor, quality: int | Tensor | None = None, capture_likelihoods: list[dict[str, Tensor]] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Compress and decode images without entropy coding (the codec's forward: in eval mode exactly the ŷ a
        bitstream carries; in train mode noise/STE quantization, differentiable, for fine-tuning the codec).

        Args:
            images: (B, 3, H, W) in [0, 1].
            quality: level(s) in [0, 9] (default: the config's ``quality``).
            capture_likelihoods: list to which the codec's likelihoods are appended
                (``{"y": (B, M, H'/16, W'/16), "z": (B, C_z, H'/64, W'/64)}``, H', W' = H, W padded to multiples of 64).

        Returns:
            x̂ (B, 3, H, W) in [0, 1] and ŷ (B, M, ceil(H/16), ceil(W/16)), on the tower's device; for a standard
            codec (real coding of each picture, not differentiable) ŷ is None.
        """
        codec = self.codec
        q = self.cotam_config.quality if quality is None else quality
        if is_standard_codec(codec):
            if capture_likelihoods is not None:
                raise ConfigError(f"the {codec.kind} base has no likelihoods to capture (it cannot be fine-tuned)")
            return self._code_standard(images, q), None
        h, w = images.shape[-2:]
        ph, pw = (-h) % 64, (-w) % 64
        x = F.pad(images.float(), (0, pw, 0, ph), mode="replicate").to(next(codec.parameters()).device)
        if isinstance(q, Tensor) and q.dim() >= 2 and (ph or pw):  # a per-position map: extend it over the padding
            grid = q.reshape(-1, 1, *q.shape[-2:]).float()
            grid = F.pad(grid, (0, x.shape[-1] // LATENT_STRIDE - q.shape[-1], 0, x.shape[-2] // LATENT_STRIDE - q.shape[-2]),
                         mode="replicate")
            q = grid.reshape(*q.shape[:-2], *grid.shape[-2:]).long()
        out = codec(x, q)
        if capture_likelihoods is not None:
            capture_likelihoods.append(out.likelihoods)
        hl, wl = -(-h // LATENT_STRIDE), -(-w // LATENT_STRIDE)
        return out.x_hat[..., :h, :w].clamp(0, 1).to(self.device), out.y_hat[..., :hl, :wl].to(self.device)

    def _code_standard(self, images: Tensor, quality: int | Tensor) -> Tensor:
        """Each picture through the standard codec for real (8-bit canvas, intra picture, its decode): x̂ (B, 3, H, W)."""
        codec = self.codec
        h, w = images.shape[-2:]
        q = quality if isinstance(quality, Tensor) else torch.tensor(quality)
        out = []
        for i, image in enumerate(images.detach().float().clamp(0, 1).cpu()):
            picture = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            qi = q if q.dim() == 0 else q[i]
            if qi.dim() == 0:
                _, rgb = codec.roundtrip(picture, int(qi))
            else:  # a per-position map on the 16-pixel grid: block QP offsets around its most common level
                grid = qi.reshape(qi.shape[-2:]).cpu().numpy().astype(np.int64)
                base = int(np.bincount(grid.reshape(-1)).argmax())
                _, rgb = codec.roundtrip(picture, base, QualityMap(grid))
            out.append(torch.from_numpy(np.ascontiguousarray(rgb[:h, :w])).permute(2, 0, 1).float().div_(255.0))
        return torch.stack(out).to(self.device)

    def _adapter_input(self, y_hat: Tensor, quality: int | Tensor | np.ndarray) -> Tensor:
        """What the adapter reads: ŷ (B, M, h, w), plus the quality plane (B, 1, h, w) when it is
        quality-conditioned. ``quality``: one level, one per sample (B,), or per-position maps ((B,) h, w)."""
        if not self.adapter.config.num_qualities:
            return y_hat
        b, _, h, w = y_hat.shape
        q = torch.as_tensor(np.asarray(quality) if not isinstance(quality, Tensor) else quality)
        q = q.to(device=y_hat.device, dtype=y_hat.dtype)
        q = q.reshape(-1, 1, 1, 1) if q.dim() <= 1 else q.reshape(-1, 1, *q.shape[-2:])[..., :h, :w]
        return torch.cat([y_hat, q.expand(b, 1, h, w)], dim=1)

    # ------------------------------------------------------------------ forward
    def _encode(self, pixel_values: Tensor, latents: Tensor | None, capture: list[Tensor] | None, **kwargs: Any) -> Any:
        encoder_dtype = next(self.encoder.parameters()).dtype
        delta = self.adapter(latents.to(self.device)) if latents is not None and self.adapter_enabled else None
        kwargs.setdefault("output_hidden_states", True)
        kwargs.setdefault("return_dict", True)
        out = run_with_embedding_delta(self.encoder, pixel_values.to(self.device, encoder_dtype), delta, capture, **kwargs)
        if self.output_dtype is not None:
            for key in ("last_hidden_state", "pooler_output"):
                if isinstance(out.get(key), Tensor):
                    out[key] = out[key].to(self.output_dtype)
            if out.get("hidden_states") is not None:
                out["hidden_states"] = tuple(
                    h.to(self.output_dtype) if h is not None else None for h in out["hidden_states"]
                )
        return out

    def forward(
        self,
        pixel_values: Tensor | BitstreamInput,
        quality: int | Tensor | None = None,
        capture_embeddings: list[Tensor] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run the tower.

        Args:
            pixel_values: bitstreams (bytes, list, containers, or a packed uint8 tensor), or normalised pixel
                views (n, 3, S, S) as the host image processor makes them.
            quality: for pixel views without attached latents: the on-the-fly quality.
            capture_embeddings: list to which the enhanced embedding output (n, T, D) is appended.
            **kwargs: passed to the encoder (``output_hidden_states`` defaults to True).

        Returns:
            What the stock encoder returns (e.g. ``BaseModelOutputWithPooling``) for the views.
        """
        kwargs.pop("image_sizes", None)
        if not isinstance(pixel_values, Tensor) or is_packed_bitstreams(pixel_values):
            decoded = [item for items in self.decode(pixel_values) for item in items]
            inputs = self.host_inputs(decoded, anyres=False)
            return self._encode(inputs.pixel_values, inputs.latents, capture_embeddings, **kwargs)
        pending = self.__dict__["_pending"]
        if pending:
            latents = pending.pop()
            if latents.shape[0] != pixel_values.shape[0]:
                raise CoTAMError(f"{pixel_values.shape[0]} pixel views but {latents.shape[0]} latent views attached")
            return self._encode(pixel_values, latents, capture_embeddings, **kwargs)
        if not self.compress_pixels:
            return self._encode(pixel_values, None, capture_embeddings, **kwargs)
        mean, std = self._normalization(pixel_values.device)
        return self.encode_images((pixel_values.float() * std + mean).clamp(0, 1), quality, capture_embeddings, **kwargs)

    # ------------------------------------------------------------------ differentiable path (training, simulation)
    def _normalization(self, device: torch.device) -> tuple[Tensor, Tensor]:
        proc = self.cotam_config.image_processor
        mean = torch.tensor(proc["image_mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(proc["image_std"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        return mean, std

    def preprocess(self, images: Tensor) -> Tensor:
        """Differentiable stand-in for the host image processor on square pictures.

        Bicubic (antialiased) resize to the encoder's input side, then the processor's normalisation. The
        bitstream path uses the host's own (PIL) processor instead; this one is for training and simulation.

        Args:
            images: (B, 3, H, W) in [0, 1].

        Returns:
            (B, 3, S, S) normalised views.
        """
        side = self.input_side
        if images.shape[-2:] != (side, side):
            images = F.interpolate(images, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
        mean, std = self._normalization(images.device)
        return (images.clamp(0, 1) - mean) / std

    def encode_images(
        self,
        images: Tensor,
        quality: int | Tensor | None = None,
        capture_embeddings: list[Tensor] | None = None,
        compress: bool = True,
        capture_likelihoods: list[dict[str, Tensor]] | None = None,
        coded: tuple[Tensor, Tensor | None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Encoder output for pictures compressed on the fly (or left as they are with ``compress=False``).

        Args:
            images: (B, 3, H, W) in [0, 1], e.g. crops at the codec canvas (16 × the patch grid).
            quality: level (or per-sample / per-position levels) for the codec; default: the config's.
            capture_embeddings: list to which the (enhanced) embedding output is appended.
            compress: False runs the stock encoder on ``images`` (the reference for fidelity losses).
            capture_likelihoods: list to which the codec's likelihoods are appended (see :meth:`simulate`).
            coded: (x̂, ŷ) that :meth:`simulate` already made of ``images`` at ``quality`` (a frozen codec's output,
                shared by several passes); None codes them here.

        Returns:
            What the stock encoder returns for the views.
        """
        if not compress:
            return self._encode(self.preprocess(images.to(self.device)), None, capture_embeddings, **kwargs)
        x_hat, y_hat = coded if coded is not None else self.simulate(images, quality, capture_likelihoods)
        h, w = images.shape[-2:]
        features = self.adapter.features(x_hat) if self.adapter.config.reads_pixels else y_hat
        y_in = self._adapter_input(features, self.cotam_config.quality if quality is None else quality)
        latents = torch.cat([sample_latent(y[None], [full_box(w, h)], self.grid) for y in y_in])
        return self._encode(self.preprocess(x_hat), latents, capture_embeddings, **kwargs)
