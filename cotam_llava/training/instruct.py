"""Instruction data for fine-tuning the host MLLM (``cotam train-mllm``): LLaVA's conversation JSON, label masking,
and a tiny generated set (``cotam tiny-instruct``).

The file format is LLaVA's (``llava_instruct_150k.json``, ``llava_v1_5_mix665k.json``)::

    [{"id": "000000033471",
      "image": "coco/train2017/000000033471.jpg",            # or a list of paths, or absent (text only)
      "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                        {"from": "gpt", "value": "The bus is white and red."}, ...]}, ...]

Each conversation becomes transformers chat messages (an ``{"type": "image"}`` entry where ``<image>`` stood; an
image without a placeholder goes before the first question, as LLaVA does), rendered with the host's own chat
template. Only the answers carry loss::

    render(messages[:i], generation prompt) ─tokenize─▶ n_start   (everything before answer i: label -100)
    render(messages[:i+1])                  ─tokenize─▶ n_end     (answer i: label = token)
    tokens = tokenize(render(messages)) with EOS appended after each answer the template does not end itself
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError, ImageInputError

__all__ = ["Conversation", "load_conversations", "to_messages", "tokenize_conversation", "TokenizedConversation",
           "write_tiny_instruct", "IGNORE_INDEX", "IMAGE_PLACEHOLDER"]

IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass
class Conversation:
    """One training conversation: image files (prompt order) and (role, text) turns, roles user/assistant/system."""

    id: str
    images: list[Path]
    turns: list[tuple[str, str]] = field(default_factory=list)


def load_conversations(path: str | Path, image_folder: str | Path | None = None) -> list[Conversation]:
    """Read a LLaVA conversation JSON; images relative to ``image_folder`` (default: the JSON's folder).

    Raises:
        ImageInputError: the file is missing, not such a JSON, or names image files that do not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageInputError(f"instruction data not found: {path}")
    try:
        records = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageInputError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(records, list) or not records:
        raise ImageInputError(f"{path}: expected a non-empty JSON list of conversations (LLaVA's format)")
    root = Path(image_folder) if image_folder is not None else path.parent
    out: list[Conversation] = []
    for n, rec in enumerate(records):
        where = f"{path} entry {n}"
        if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list) or not rec["conversations"]:
            raise ImageInputError(f"{where}: needs a non-empty 'conversations' list")
        raw = rec.get("image")
        names = [] if raw is None else [raw] if isinstance(raw, str) else raw
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise ImageInputError(f"{where}: 'image' must be a path or a list of paths")
        turns = []
        for turn in rec["conversations"]:
            role = _ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
            if role is None or not isinstance(turn.get("value"), str):
                raise ImageInputError(f"{where}: every turn needs 'from' (human, gpt or system) and a string 'value'")
            turns.append((role, turn["value"]))
        if not any(role == "assistant" for role, _ in turns):
            raise ImageInputError(f"{where}: no answer ('from': 'gpt') to learn from")
        placeholders = sum(text.count(IMAGE_PLACEHOLDER) for role, text in turns if role == "user")
        if any(IMAGE_PLACEHOLDER in text for role, text in turns if role != "user"):
            raise ImageInputError(f"{where}: {IMAGE_PLACEHOLDER} may only stand in a human turn")
        if placeholders not in (0, len(names)):
            raise ImageInputError(f"{where}: {len(names)} images but {placeholders} {IMAGE_PLACEHOLDER} placeholders")
        images = [root / name for name in names]
        missing = [p for p in images if not p.is_file()]
        if missing:
            raise ImageInputError(f"{where}: image not found: {missing[0]}")
        out.append(Conversation(str(rec.get("id", n)), images, turns))
    return out


def to_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """transformers chat messages; ``{"type": "image"}`` entries stand where ``<image>`` was (images without
    placeholders: before the first question's text)."""
    messages: list[dict[str, Any]] = []
    explicit = any(IMAGE_PLACEHOLDER in text for _, text in conversation.turns)
    first_user = True
    for role, text in conversation.turns:
        content: list[dict[str, Any]] = []
        if role == "user" and first_user and not explicit:
            content += [{"type": "image"} for _ in conversation.images]
        parts = text.split(IMAGE_PLACEHOLDER) if role == "user" else [text]
        for k, part in enumerate(parts):
            if k:
                content.append({"type": "image"})
            part = part.strip()
            if part:
                content.append({"type": "text", "text": part})
        if role == "user":
            first_user = False
        messages.append({"role": role, "content": content})
    return messages


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _count_images(messages: Sequence[dict[str, Any]]) -> int:
    return sum(1 for m in messages for c in m["content"] if c.get("type") == "image")


@dataclass
class TokenizedConversation:
    """Model inputs of one conversation.

    Attributes:
        input_ids: (L,) token ids, image tokens expanded as the host does.
        labels: (L,) the token where it is part of an answer (or an appended EOS), else ``IGNORE_INDEX``.
        features: the processor's other outputs for the images (``pixel_values`` and, for AnyRes hosts,
            ``image_sizes``, ``batch_num_images``).
    """

    input_ids: list[int]
    labels: list[int]
    features: dict[str, Any]


def tokenize_conversation(
    render: Callable[[list[dict[str, Any]], bool], str],
    encode: Callable[[str, int], dict[str, Any]],
    messages: list[dict[str, Any]],
    eos_token_id: int | None,
    image_token_id: int | None,
    max_length: int,
    append_eos: bool = True,
) -> TokenizedConversation:
    """Tokens and labels of one conversation, with every prompt token masked (see the module docstring).

    Args:
        render: ``render(messages, add_generation_prompt)`` → the chat template's text.
        encode: ``encode(text, n_images)`` → the processor's features (``input_ids`` (1, L)) for ``text`` with the
            conversation's first ``n_images`` images.
        messages: from :func:`to_messages`.
        eos_token_id: appended (with its label) after each answer the template does not end with it.
        image_token_id: the host's image token (a cut may not fall inside the image tokens).
        max_length: tokens kept (cut after the last image token; more raises ImageInputError).

    Raises:
        ConfigError: the chat template renders a conversation's beginning differently from the whole (the prompt
            cannot be masked by prefixes).
    """
    full = encode(render(messages, False), _count_images(messages))
    ids = [int(t) for t in full["input_ids"][0]]
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = [int(t) for t in encode(render(messages[:i], True), _count_images(messages[:i]))["input_ids"][0]]
        upto = [int(t) for t in encode(render(messages[:i + 1], False), _count_images(messages[:i + 1]))["input_ids"][0]]
        # where the whole conversation stops agreeing with its beginnings: equal to their lengths for templates that
        # render turn by turn; shorter by the token a BPE merge carries across a boundary (that token is labelled)
        start, end = _common_prefix(ids, head), _common_prefix(ids, upto)
        if end < start or start < len(head) - 1 or end < len(upto) - 1:
            raise ConfigError("the chat template does not render a conversation's beginning as the start of the whole "
                              "conversation, so the prompt cannot be masked; use a template that renders turn by turn")
        spans.append((start, end))
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in spans:
        labels[start:end] = ids[start:end]
    if append_eos and eos_token_id is not None:
        for start, end in reversed(spans):  # from the end, so earlier positions stay valid
            if eos_token_id in ids[start:end]:  # the template ends its turns with EOS itself
                continue
            ids.insert(end, eos_token_id)
            labels.insert(end, eos_token_id)
    if len(ids) > max_length:
        if image_token_id is not None and image_token_id in ids[max_length:]:
            raise ImageInputError(f"the image tokens of a conversation reach past model_max_length={max_length} "
                                  f"({len(ids)} tokens): raise model_max_length")
        ids, labels = ids[:max_length], labels[:max_length]
    features = {k: v for k, v in full.items() if k not in ("input_ids", "attention_mask")}
    return TokenizedConversation(ids, labels, features)


# --------------------------------------------------------------------------- the tiny generated set
TINY_COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40),
                "white": (250, 250, 250), "black": (10, 10, 10)}
TINY_SHAPES = ("circle", "square", "triangle")


def _draw(size: tuple[int, int], background: tuple[int, int, int], shape: str, colour: tuple[int, int, int]):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, background)
    w, h = size
    r = min(w, h) // 3
    cx, cy = w // 2, h // 2
    pen = ImageDraw.Draw(image)
    if shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return image


def write_tiny_instruct(out_dir: str | Path, samples: int = 48, seed: int = 0) -> Path:
    """A small instruction set in LLaVA's format, generated offline: pictures of one shape on a plain background
    (sizes 64–128 px), one or two questions each (the background colour, the shape, the shape's colour), one-word
    answers. Deterministic for (samples, seed).

    Writes ``out_dir/images/*.png`` and ``out_dir/train.json``; returns the JSON's path.
    """
    if samples < 1:
        raise ConfigError(f"samples must be ≥ 1, got {samples}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(TINY_COLOURS)
    records = []
    for i in range(samples):
        bg, fg = rng.choice(len(names), size=2, replace=False)
        shape = TINY_SHAPES[int(rng.integers(len(TINY_SHAPES)))]
        size = (int(rng.integers(64, 129)), int(rng.integers(64, 129)))
        name = f"images/{i:05d}.png"
        _draw(size, TINY_COLOURS[names[bg]], shape, TINY_COLOURS[names[fg]]).save(out / name)
        qa = [("what shape is this ?", shape), ("what colour is the background ?", names[bg]),
              (f"what colour is the {shape} ?", names[fg])]
        order = rng.permutation(len(qa))[: 1 + int(rng.integers(2))]
        turns = []
        for k, j in enumerate(order):
            question, answer = qa[int(j)]
            turns.append({"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{question}" if k == 0 else question})
            turns.append({"from": "gpt", "value": answer})
        records.append({"id": f"tiny-{i:05d}", "image": name, "conversations": turns})
    path = out / "train.json"
    path.write_text(json.dumps(records, indent=1) + "\n")
    return path
