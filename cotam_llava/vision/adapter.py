"""The latent feature adapter: ŷ → an enhancement added to the encoder's embedding output (paper §3.3).

::

    ŷ (B, M, gh, gw) ─flatten─▶ (B, gh·gw, M) ─Linear(M→D)─▶ ─prepend prefix tokens ([CLS], registers)─▶
      + learned position embeddings (interpolated if the grid differs) ─pre-LayerNorm─▶
      ``num_layers`` CLIP-style transformer blocks (paper: one; heads = D/64) ─Linear(D→D), zero-initialised─▶
      Δ (B, P + gh·gw, D)

The output projection starts at zero, so an untrained adapter adds nothing and the MLLM sees exactly
the stock encoder's tokens of the decoded image x̂.

Quality conditioning (``num_qualities > 0``, our addition to the paper's adapter): the input carries one more
channel, the quality level of each latent position (the decoder knows the map from the header), and a learned
embedding per level (linearly interpolated for fractional levels, e.g. where views average a mixed map) is
added to the patch tokens. ŷ after the inverse gain does not show which level coded it, and a quality-blind
adapter trained over 10 levels applied the corrections that low levels need to high ones, where they lowered
fidelity (measured: held-out DINOv2 token cosine at q7 0.9945 → 0.986 after 300 steps, while q1 gained).

Bases without a latent (``input = "pixels"``, the standard codecs hevc / av1 of issue 20): a small strided stem
reads the decoded canvas x̂ instead and makes ``latent_channels`` features on the same 16-pixel grid ŷ has, so
everything after it — the views' geometry, the quality plane, the blocks, the zero output — is unchanged::

    x̂ (B, 3, Hc, Wc) ─stem: "conv" (4 stride-2 3×3 convolutions, GELU between) | "patch" (one 16×16 patchify)─▶
      (B, latent_channels, Hc/16, Wc/16) ─▶ as ŷ above
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._config import strict_from_dict
from ..codec.configuration import CODEC_SUBFOLDER
from ..errors import CheckpointError, ConfigError
from .views import LATENT_STRIDE

__all__ = ["LatentAdapterConfig", "LatentFeatureAdapter", "num_blocks_in", "ADAPTER_WEIGHTS", "ADAPTER_CONFIG",
           "ADAPTER_INPUTS", "PIXEL_STEMS", "PIXEL_STEM_CHANNELS",
           "load_adapter_weights", "load_adapter_for", "read_adapter_config", "adapter_codec_path", "adapter_depth"]

#: An adapter folder (``cotam train-adapter``'s export, a LLaVA tower folder): the weights, and — for exports —
#: ``adapter_config.json`` with the tower config, the encoder, the codec it was trained with and the step.
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
#: What an adapter reads, and the stems a pixel adapter can have (see the module docstring).
ADAPTER_INPUTS = ("latent", "pixels")
PIXEL_STEMS = ("conv", "patch")
#: The channels a pixel stem makes when a tower is built over a standard base (ŷ's width in elic-small).
PIXEL_STEM_CHANNELS = 192


@dataclass
class LatentAdapterConfig:
    """Shape of a :class:`LatentFeatureAdapter`.

    Args:
        latent_channels: M, channels of the codec's ŷ (320 in the paper's ELIC, 192 in ``elic-small``).
        hidden_size: D, the vision encoder's width (1024 for CLIP-L).
        grid: (rows, cols) of the encoder's patch grid the position embeddings are learned for.
        num_prefix_tokens: tokens before the patches in the encoder's embedding output
            (1 for a [CLS] token, + registers; 0 for SigLIP).
        num_heads: attention heads of the block (None: D/64, at least 1).
        mlp_ratio: MLP width of the block as a multiple of D.
        layer_norm_eps: epsilon of both LayerNorms.
        num_qualities: > 0: quality-conditioned; the input has ``latent_channels + 1`` channels, the last
            holding each position's quality level in [0, num_qualities − 1]. 0: the paper's adapter (ŷ only).
        num_layers: transformer blocks (paper: 1). Checkpoints from before this option (one block, saved as
            ``block.*``) load unchanged.
        input: ``"latent"`` (the learned codec's ŷ, the paper's adapter) or ``"pixels"`` (the decoded picture
            through a stem: bases without a latent).
        stem: the pixel stem, ``"conv"`` or ``"patch"`` (ignored for ``input = "latent"``).
        level_scale: with quality conditioning, one factor per level multiplying the enhancement of the positions
            coded at that level (linearly interpolated for fractional levels; the prefix tokens take the mean of
            their picture's factors); ``None`` (the paper) is 1 everywhere. Fitted after training on held-out photos
            by ``cotam calibrate-adapter``: an adapter that learnt the low levels' corrections but slightly hurts
            near-lossless ones is switched down there instead of retrained.
    """

    latent_channels: int
    hidden_size: int
    grid: tuple[int, int]
    num_prefix_tokens: int = 1
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-5
    num_qualities: int = 0
    num_layers: int = 1
    input: str = "latent"
    stem: str = "conv"
    level_scale: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        self.grid = tuple(int(g) for g in self.grid)  # type: ignore[assignment]
        if self.latent_channels < 1 or self.hidden_size < 1:
            raise ConfigError("latent_channels and hidden_size must be positive")
        if len(self.grid) != 2 or min(self.grid) < 1 or max(self.grid) > 256:
            raise ConfigError(f"grid must be two sides in [1, 256], got {self.grid}")
        if not 0 <= self.num_prefix_tokens <= 64:
            raise ConfigError(f"num_prefix_tokens must be in [0, 64], got {self.num_prefix_tokens}")
        if self.num_heads is None:
            self.num_heads = max(1, self.hidden_size // 64)
        if self.num_heads < 1 or self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.mlp_ratio <= 0:
            raise ConfigError("mlp_ratio must be positive")
        if not 0 <= self.num_qualities <= 64:
            raise ConfigError(f"num_qualities must be in [0, 64], got {self.num_qualities}")
        if not 1 <= self.num_layers <= 24:
            raise ConfigError(f"num_layers must be in [1, 24], got {self.num_layers}")
        if self.input not in ADAPTER_INPUTS:
            raise ConfigError(f"adapter input must be one of {', '.join(ADAPTER_INPUTS)}, got {self.input!r}")
        if self.stem not in PIXEL_STEMS:
            raise ConfigError(f"adapter stem must be one of {', '.join(PIXEL_STEMS)}, got {self.stem!r}")
        if self.input == "pixels" and self.latent_channels > 1024:
            raise ConfigError(f"a pixel stem makes at most 1024 channels, got latent_channels {self.latent_channels}")
        if self.level_scale is not None:
            try:
                self.level_scale = tuple(float(v) for v in self.level_scale)  # type: ignore[assignment]
            except (TypeError, ValueError):
                raise ConfigError(f"level_scale must be a list of numbers, got {self.level_scale!r}") from None
            if len(self.level_scale) != self.num_qualities or not self.num_qualities:
                raise ConfigError(f"level_scale needs one factor per quality level ({self.num_qualities}), "
                                  f"got {len(self.level_scale)}")
            if not all(0.0 <= v <= 8.0 for v in self.level_scale):  # also rejects NaN
                raise ConfigError(f"level_scale factors must be in [0, 8], got {list(self.level_scale)}")

    @property
    def reads_pixels(self) -> bool:
        """Whether the adapter reads the decoded picture (a stem) rather than the codec's ŷ."""
        return self.input == "pixels"

    @property
    def input_channels(self) -> int:
        """Channels the adapter takes: ŷ's M, plus the quality plane when conditioned."""
        return self.latent_channels + (1 if self.num_qualities else 0)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["grid"] = list(self.grid)
        if self.level_scale is not None:
            d["level_scale"] = list(self.level_scale)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatentAdapterConfig":
        return strict_from_dict(cls, data, "adapter")


class _Block(nn.Module):
    """A pre-LN transformer block as in CLIP's encoder layers (self-attention, then an MLP)."""

    def __init__(self, config: LatentAdapterConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = int(config.num_heads)  # type: ignore[arg-type]
        self.layer_norm1 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)
        self.layer_norm2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        hidden = int(round(d * config.mlp_ratio))
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.layer_norm1(x)).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.out_proj(attn)
        return x + self.fc2(F.gelu(self.fc1(self.layer_norm2(x))))

    def make_identity_(self) -> None:
        """Zero both residual branches' output layers: the block passes its input through unchanged (a block
        added to a trained adapter starts from that adapter's behaviour)."""
        for layer in (self.out_proj, self.fc2):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)


class _PixelStem(nn.Module):
    """Decoded picture (B, 3, H, W) in [0, 1] → features (B, C, ceil(H/16), ceil(W/16)) on ŷ's grid."""

    def __init__(self, channels: int, kind: str) -> None:
        super().__init__()
        if kind == "patch":
            self.layers = nn.Sequential(nn.Conv2d(3, channels, 16, stride=16))
        else:
            widths = [3, 48, 96, 192, channels]
            layers: list[nn.Module] = []
            for i, (a, b) in enumerate(zip(widths, widths[1:])):
                layers += [nn.Conv2d(a, b, 3, stride=2, padding=1)] + ([nn.GELU()] if i < 3 else [])
            self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % LATENT_STRIDE, 0, (-h) % LATENT_STRIDE), mode="replicate")
        return self.layers((x - 0.5) / 0.25)


def _rename_single_block(state_dict: dict[str, Tensor], prefix: str, *_args: Any) -> None:
    """Adapters saved before ``num_layers`` existed name their one block ``block.*``; it is ``blocks.0.*`` now."""
    old = prefix + "block."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + "blocks.0." + key[len(old):]] = state_dict.pop(key)


def num_blocks_in(keys: Iterable[str]) -> int:
    """The ``num_layers`` an adapter state dict's keys need: blocks ``blocks.N.*`` (a legacy ``block.*`` is one;
    keys naming no block give the default, 1)."""
    indices = {int(k.split(".")[1]) for k in keys if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    return max(indices) + 1 if indices else 1


class LatentFeatureAdapter(nn.Module):
    """Maps the decoded latent ŷ to tokens added to the vision encoder's embedding output (CoTAM §3.3).

    The block is written out (a dozen lines over ``F.scaled_dot_product_attention``) rather than borrowed
    from ``transformers.models.clip`` so its weights and behaviour do not change with that module's
    internals (attention backends, signature changes across transformers releases).
    """

    def __init__(self, config: LatentAdapterConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_size
        gh, gw = config.grid
        self.stem = _PixelStem(config.latent_channels, config.stem) if config.reads_pixels else None
        self.proj_in = nn.Linear(config.latent_channels, d)
        self.prefix = nn.Parameter(torch.zeros(1, config.num_prefix_tokens, d))
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_prefix_tokens + gh * gw, d))
        self.quality_embedding = nn.Parameter(torch.zeros(config.num_qualities, d)) if config.num_qualities else None
        self.pre_layernorm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.num_layers))
        self.proj_out = nn.Linear(d, d)
        self.reset_parameters()
        self._register_load_state_dict_pre_hook(_rename_single_block)

    def reset_parameters(self) -> None:
        """Fresh initialisation: small random weights, and a zero output projection (Δ = 0)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):  # the pixel stem: PyTorch's default (Kaiming-uniform) scale
                module.reset_parameters()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.prefix, std=0.02)
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        if self.quality_embedding is not None:
            nn.init.trunc_normal_(self.quality_embedding, std=0.02)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def _positions(self, grid: tuple[int, int]) -> Tensor:
        p = self.config.num_prefix_tokens
        if tuple(grid) == tuple(self.config.grid):
            return self.position_embedding
        gh, gw = self.config.grid
        patch = self.position_embedding[:, p:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([self.position_embedding[:, :p], patch.flatten(2).transpose(1, 2)], dim=1)

    def _per_level(self, table: Tensor, levels: Tensor) -> Tensor:
        """``table`` (num_qualities, …) at (B, gh·gw) levels (fractional allowed), interpolating between
        neighbouring levels → (B, gh·gw, …)."""
        q = levels.clamp(0, self.config.num_qualities - 1)
        lo = q.floor().long()
        hi = (lo + 1).clamp(max=self.config.num_qualities - 1)
        w = (q - lo).to(table.dtype).reshape(*q.shape, *([1] * (table.dim() - 1)))
        return (1 - w) * table[lo] + w * table[hi]

    def _quality_tokens(self, levels: Tensor) -> Tensor:
        """(B, gh·gw) levels → (B, gh·gw, D): the learned per-level embeddings."""
        return self._per_level(self.quality_embedding, levels)

    def features(self, x_hat: Tensor) -> Tensor:
        """What the adapter reads from a decoded picture: its stem's features (B, C, ceil(H/16), ceil(W/16)) for a
        pixel adapter (``x_hat`` (B, 3, H, W) in [0, 1], differentiable)."""
        if self.stem is None:
            raise ConfigError("this adapter reads the codec's latent ŷ, not pixels")
        return self.stem(x_hat.to(self.proj_in.weight.dtype))

    def forward(self, y_hat: Tensor) -> Tensor:
        """Compute the enhancement Δ.

        Args:
            y_hat: decoded latent (or a pixel adapter's :meth:`features` of x̂) on the encoder's patch grid, (B, M, gh, gw); with quality conditioning
                (B, M + 1, gh, gw), the last channel holding each position's quality level.

        Returns:
            Δ, (B, num_prefix_tokens + gh·gw, D), to add to the embedding output.
        """
        channels = self.config.input_channels
        if y_hat.dim() != 4 or y_hat.shape[1] != channels:
            what = "ŷ + a quality plane" if self.config.num_qualities else "ŷ"
            raise ConfigError(f"adapter expects {what} of shape (B, {channels}, h, w), got {tuple(y_hat.shape)}")
        b, _, gh, gw = y_hat.shape
        dtype = self.proj_in.weight.dtype
        m = self.config.latent_channels
        tokens = self.proj_in(y_hat[:, :m].to(dtype).flatten(2).transpose(1, 2))
        if self.quality_embedding is not None:
            tokens = tokens + self._quality_tokens(y_hat[:, m].float().flatten(1))
        tokens = torch.cat([self.prefix.expand(b, -1, -1), tokens], dim=1) + self._positions((gh, gw))
        tokens = self.pre_layernorm(tokens)
        for block in self.blocks:
            tokens = block(tokens)
        delta = self.proj_out(tokens)
        if self.config.level_scale is None:
            return delta
        table = torch.tensor(self.config.level_scale, dtype=delta.dtype, device=delta.device)
        scale = self._per_level(table, y_hat[:, m].float().flatten(1))  # (B, gh·gw)
        scale = torch.cat([scale.mean(1, keepdim=True).expand(b, self.config.num_prefix_tokens), scale], dim=1)
        return delta * scale.unsqueeze(-1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, folder: str | os.PathLike, info: dict[str, Any] | None = None) -> Path:
        """Write ``adapter.safetensors`` (fp32) into ``folder`` and, with ``info``, ``adapter_config.json``
        (an export's description: ``{"tower": ..., "encoder": ..., "codec": ..., "codec_id": ..., "step": ...}``)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        if info is not None:
            (folder / ADAPTER_CONFIG).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "LatentFeatureAdapter":
        """The adapter of an exported folder (its shape from ``adapter_config.json``, every weight strict)."""
        info = read_adapter_config(folder)
        try:
            config = LatentAdapterConfig.from_dict(dict(info["tower"]["adapter"]))
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{Path(folder) / ADAPTER_CONFIG} has no tower.adapter shape") from exc
        adapter = cls(config)
        try:
            adapter.load_state_dict(load_adapter_weights(folder))
        except RuntimeError as exc:
            raise CheckpointError(f"{folder}: the weights do not match its {ADAPTER_CONFIG}: {exc}") from exc
        return adapter


def load_adapter_weights(folder: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of ``folder/adapter.safetensors`` (CheckpointError when missing or unreadable)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / ADAPTER_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"no {ADAPTER_WEIGHTS} in {folder}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from exc


def load_adapter_for(folder: str | os.PathLike, adapter_config: dict[str, Any]) -> dict[str, Tensor]:
    """The weights of an adapter folder, for a tower whose adapter config (a dict) is ``adapter_config``: sets its
    ``num_layers`` (counted in the weights) and, where the folder's ``adapter_config.json`` has one, its
    ``level_scale`` (``cotam calibrate-adapter``), so building a model from the folder keeps what it measured."""
    state = load_adapter_weights(folder)
    adapter_config["num_layers"] = num_blocks_in(state)
    if (Path(folder) / ADAPTER_CONFIG).is_file():
        scale = (read_adapter_config(folder).get("tower") or {}).get("adapter", {}).get("level_scale")
        if scale is not None:
            adapter_config["level_scale"] = list(scale)
    return state


def read_adapter_config(folder: str | os.PathLike) -> dict[str, Any]:
    """adapter_config.json of an exported adapter folder (CheckpointError when the folder is not one)."""
    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
        raise CheckpointError(f"{folder} is not an exported adapter (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    try:
        info = json.loads((folder / ADAPTER_CONFIG).read_text())
    except ValueError as exc:
        raise CheckpointError(f"{folder / ADAPTER_CONFIG} is not valid JSON: {exc}") from exc
    if not isinstance(info, dict):
        raise CheckpointError(f"{folder / ADAPTER_CONFIG} is not a JSON object")
    return info


def adapter_codec_path(folder: str | os.PathLike, info: dict[str, Any]) -> Path:
    """The codec an exported adapter names: its own ``codec/`` (a fine-tuned codec) or the frozen one's path."""
    return Path(folder) / CODEC_SUBFOLDER if info["codec"] == CODEC_SUBFOLDER else Path(info["codec"])


def adapter_depth(folder: str | os.PathLike) -> int:
    """Transformer blocks of an exported adapter, counted in its weights (CheckpointError when it is not one)."""
    from safetensors import safe_open

    read_adapter_config(folder)
    with safe_open(str(Path(folder) / ADAPTER_WEIGHTS), "pt") as weights:
        return num_blocks_in(weights.keys())

