"""``--model cotam_llava`` for lmms-eval: any CoTAM model, every picture through a real bitstream.

::

    lmms-eval --model cotam_llava --model_args pretrained=DIR,codec=cotam,quality=4 --tasks ... --include_path eval/tasks

    request (context, gen_kwargs, doc_to_visual, doc_id, task, split)
      images ─codec────────────────────────────────────────────────────────────────────────────────────┐
        cotam / cotam-noguide / cotam-noadapter / base:                                                  │
            edge (guidance on|off) ─▶ .cotam bytes ─▶ CoTAMProcessor(bitstreams=…) ─▶ tower decodes them  │
            (adapter on for cotam*, off for cotam-noadapter and base)                                     │
        jpeg / webp / avif: the same picture the edge would code (centre square, codec canvas) ─▶ Pillow │
            file bytes ─▶ decoded picture ─▶ the host's own processor ─▶ stock encoder (no compression)   │
        none: the original picture ─▶ the host's own processor (the uncompressed reference; 24 bpp)      │
      videos (LLaVA-OneVision): max_frames frames sampled uniformly, each coded as above, one container  │
      bits = real bytes × 8 ───────────────────────────────────────────────────────────────────────────┘
        ─▶ per request: SampleRate(bits, pixels, frames) ─▶ RATE_LEDGER (read by the tasks' process_results)
                                                          ─▶ $COTAM_BITS_LOG (JSONL, one line per request)
      batch of prompts (host chat template, left padding) ─▶ model.generate (greedy unless the task samples)

How the rate reaches the results JSON (``<output_path>/<model>/<date>_results.json``):

1. **Per task, beside the scores** — the tasks in ``eval/tasks`` wrap their process_results with
   :func:`~cotam_llava.evaluation.lmms_tasks.with_rate`, so each document's ``bpp`` (and ``bits_per_frame``
   for videos) is a metric like any other: lmms-eval averages it and writes
   ``results["results"][task]["bpp,none"]`` (with its stderr) next to the task's scores, prints it in its table,
   and, with ``--log_samples``, stores it in every sample line.
2. **For any task** (also lmms-eval's stock ones) — once generation is over, lmms-eval calls ``clean()``;
   there the model reports its totals through lmms-eval's own model-metrics channel
   (``lmms_eval.models.model_utils.gen_metrics.log_metrics``), which lmms-eval summarises into
   ``results["throughput"]``: ``avg_cotam_bpp`` (mean bpp over image requests), ``avg_cotam_bits_per_frame``
   (video requests) and ``avg_cotam_bpp/<task>`` etc. (this model logs one entry per run, so each "avg_" value
   is exactly the model's figure).

Neither path patches lmms-eval: the results dict is only built (``simple_evaluate``) after the model's work,
and lmms-eval offers no other hook from the model into it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from lmms_eval import utils as lmms_utils
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from loguru import logger as eval_logger
from PIL import Image

from ..codec.guidance.configuration import ALLOCATION_RULES
from ..errors import ConfigError
from .lmms_tasks import DOC_KEY, SampleRate, clear_rates, record_rate
from .variants import LEARNED, VARIANTS

__all__ = ["CoTAMLlavaLMM", "EvalSettings", "MODEL_ARGS", "CODECS", "BITS_LOG_ENV"]

#: The model_args ``--model cotam_llava`` accepts (anything else is an error).
MODEL_ARGS = ("pretrained", "cotam", "codec", "quality", "guidance", "guidance_rule", "device", "dtype", "batch_size",
              "max_frames")
#: What the pictures go through (see the module docstring).
CODECS = (*LEARNED, "jpeg", "webp", "avif", "none")
CLASSICAL = ("jpeg", "webp", "avif")
#: Pillow's own default quality of each classical format, used when ``quality`` is not given.
CLASSICAL_DEFAULT_QUALITY = {"jpeg": 75, "webp": 80, "avif": 75}
#: Environment variable naming a JSONL file that receives one line of bits per request.
BITS_LOG_ENV = "COTAM_BITS_LOG"
_DTYPES = ("float32", "bfloat16", "float16")


def _allowed() -> str:
    return ", ".join(MODEL_ARGS)


def _as_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())
                                       or (isinstance(value, float) and value.is_integer())):
        raise ConfigError(f"model_args {name} must be an integer, got {value!r}")
    out = int(value)
    if (low is not None and out < low) or (high is not None and out > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"model_args {name}={out} is out of range {bounds}")
    return out


@dataclass
class EvalSettings:
    """Validated model_args of ``--model cotam_llava``.

    Attributes:
        pretrained: a CoTAM model folder (or hub id), or a stock LLaVA / LLaVA-OneVision / InternVL checkpoint.
        cotam: codec checkpoint folder, or ``hevc`` / ``av1`` (required with a stock host unless a default codec exists).
        codec: one of :data:`CODECS` (``cotam`` and ``cotam-noadapter`` code with guidance: the model must name
            a guidance model, or ``guidance`` must, else the model's construction raises :class:`ConfigError`).
        quality: CoTAM quality level 0–9 (learned codecs; default: the model's), or Pillow quality 1–100
            (jpeg/webp/avif; default: Pillow's); not allowed with ``none``.
        guidance: the guidance ViT for the guided codecs (a name ``load_guidance`` knows, e.g. ``dinov2-imgfocus``,
            a hub id or a local folder); replaces the model's own ``guidance_model``.
        guidance_rule: ``paper`` (μ ± kσ on the guidance ViT's shallow attention; default) or ``host`` (the model's
            own vision encoder picks each region's level by its final-token error, at the uniform file's rate:
            :class:`~cotam_llava.codec.guidance.HostGuidance`; needs no guidance model; learned codecs, one view).
        device, dtype: where and in what precision the host runs (see ``load_cotam``).
        batch_size: requests per ``generate`` call.
        max_frames: frames sampled uniformly from each video.
    """

    pretrained: str
    cotam: str | None = None
    codec: str = "cotam"
    quality: int | None = None
    guidance: str | None = None
    guidance_rule: str = "paper"
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 1
    max_frames: int = 16

    @classmethod
    def from_model_args(cls, args: dict[str, Any]) -> "EvalSettings":
        """Validate a parsed model_args dict (unknown keys, types, ranges) before anything is loaded.

        Raises:
            ConfigError: with the allowed keys or values in the message.
        """
        unknown = sorted(set(args) - set(MODEL_ARGS))
        if unknown:
            raise ConfigError(f"unknown model_args for cotam_llava: {', '.join(unknown)}; allowed: {_allowed()}")
        if not args.get("pretrained"):
            raise ConfigError(f"model_args for cotam_llava need pretrained=MODEL (a CoTAM folder or a stock host); "
                              f"allowed: {_allowed()}")
        codec = str(args.get("codec", "cotam"))
        if codec not in CODECS:
            raise ConfigError(f"model_args codec={codec!r} is unknown; choose from {', '.join(CODECS)}")
        quality = args.get("quality")
        if quality is not None:
            if codec == "none":
                raise ConfigError("model_args codec=none (no compression) takes no quality")
            quality = _as_int("quality", quality, 0, 9) if codec in LEARNED else _as_int("quality", quality, 1, 100)
        elif codec in CLASSICAL:
            quality = CLASSICAL_DEFAULT_QUALITY[codec]
        dtype = args.get("dtype")
        if dtype is not None and dtype not in _DTYPES:
            raise ConfigError(f"model_args dtype={dtype!r} is unknown; choose from {', '.join(_DTYPES)}")
        rule = str(args.get("guidance_rule") or "paper")
        if rule not in ALLOCATION_RULES:
            raise ConfigError(f"model_args guidance_rule={rule!r} is unknown; choose from {', '.join(ALLOCATION_RULES)}")
        if rule == "host" and args.get("guidance") not in (None, ""):
            raise ConfigError("model_args guidance_rule=host uses the model's own vision encoder: drop guidance=")
        batch = args.get("batch_size", 1)
        if isinstance(batch, str) and batch.startswith("auto"):
            raise ConfigError("cotam_llava takes a fixed batch_size (no 'auto')")
        return cls(
            pretrained=str(args["pretrained"]),
            cotam=None if args.get("cotam") in (None, "") else str(args["cotam"]),
            codec=codec,
            quality=quality,
            guidance=None if args.get("guidance") in (None, "") else str(args["guidance"]),
            guidance_rule=rule,
            device=None if args.get("device") in (None, "") else str(args["device"]),
            dtype=dtype,
            batch_size=_as_int("batch_size", batch, 1),
            max_frames=_as_int("max_frames", args.get("max_frames", 16), 1),
        )


def parse_model_args(arg_string: str) -> dict[str, Any]:
    """lmms-eval's ``key=value,key=value`` parsing, with our error for malformed entries."""
    try:
        return lmms_utils.simple_parse_args_string(arg_string or "")
    except ValueError:
        raise ConfigError(f"model_args must be key=value pairs separated by commas, got {arg_string!r}; "
                          f"allowed keys: {_allowed()}") from None


@dataclass
class _Coded:
    """One request's media after the codec: what the processor gets, and what it cost."""

    kind: str  # image | video | text
    streams: list[bytes] = field(default_factory=list)  # learned codecs
    pictures: list[Any] = field(default_factory=list)  # classical / none: decoded PIL images, or frame arrays
    rate: SampleRate = field(default_factory=lambda: SampleRate(0, 0, 0, 0, "text"))


class CoTAMLlavaLMM(lmms):
    """lmms-eval model wrapping a CoTAM-enabled LLaVA-family model (``generate_until`` tasks).

    Build it through lmms-eval (``--model cotam_llava --model_args ...``) or directly with the keyword
    arguments of :class:`EvalSettings`.
    """

    is_simple = True

    def __init__(self, **model_args: Any) -> None:
        super().__init__()
        self.settings = EvalSettings.from_model_args(model_args)
        from ..models.loading import load_cotam

        s = self.settings
        model, processor = load_cotam(s.pretrained, s.cotam, device=s.device, dtype=s.dtype)
        self._setup(model, processor)

    @classmethod
    def from_model(cls, model: Any, processor: Any, **model_args: Any) -> "CoTAMLlavaLMM":
        """Wrap an already loaded CoTAM model and :class:`~cotam_llava.models.CoTAMProcessor` (e.g. right after
        training) for ``lmms_eval.evaluator.simple_evaluate(model=...)``; ``model_args`` as for lmms-eval, less
        ``pretrained``, ``cotam``, ``device`` and ``dtype``."""
        for key in ("pretrained", "cotam", "device", "dtype"):
            if key in model_args:
                raise ConfigError(f"from_model takes a loaded model: {key} does not apply")
        self = cls.__new__(cls)
        lmms.__init__(self)
        self.settings = EvalSettings.from_model_args({"pretrained": type(model).__name__, **model_args})
        self._setup(model, processor)
        return self

    def _setup(self, model: Any, processor: Any) -> None:
        """Switch the tower and build the edge for ``settings.codec`` (see the module docstring).

        Raises:
            ConfigError: a guided codec (``cotam``, ``cotam-noadapter``) for a model that names no guidance model.
        """
        from ..vision.edge import EdgeEncoder

        s = self.settings
        self._model, self.processor = model, processor
        tower = model.vision_tower
        config = tower.cotam_config
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"  # batched generation: prompts end where generation starts
        self.chat_template = None
        self.batch_size_per_gpu = s.batch_size
        self._device = model.device

        guided = s.codec in LEARNED and VARIANTS[s.codec].guidance
        if s.guidance is not None:
            if not guided:
                raise ConfigError(f"model_args guidance={s.guidance} applies to codec=cotam or cotam-noadapter only")
            config = dataclasses.replace(config, guidance_model=s.guidance)  # the edge's copy; the model is untouched
        if s.guidance_rule == "host":
            if not guided:
                raise ConfigError("model_args guidance_rule=host applies to codec=cotam or cotam-noadapter only")
            from ..vision.edge import guidance_for

            self.edge = EdgeEncoder(model.codec, config, guidance=guidance_for(tower, "host"))
        elif guided and config.guidance_model is None:
            unguided = "cotam-noguide" if s.codec == "cotam" else "base"
            raise ConfigError(
                f"codec={s.codec} codes with guidance, but this model names no guidance model (cotam.guidance_model in "
                f"its config.json is null): pass guidance=NAME_OR_FOLDER (e.g. guidance=dinov2-imgfocus), or codec={unguided} "
                "to code at a uniform quality"
            )
        else:
            self.edge = EdgeEncoder(model.codec, config, use_guidance=guided)
        # this wrapper owns the model for the whole evaluation: the variant is set once, not per call
        tower.adapter_enabled = s.codec in LEARNED and VARIANTS[s.codec].adapter
        tower.compress_pixels = s.codec in LEARNED  # classical / none: decoded pixels reach the stock encoder
        self.classical = None
        if s.codec in CLASSICAL:
            from ..codec.classical import PillowCodec

            self.classical = PillowCodec(s.codec)
        self.quality = s.quality if s.quality is not None or s.codec not in LEARNED else config.quality
        self.records: list[dict[str, Any]] = []
        self._gen_time = 0.0
        self._gen_tokens = 0
        self._bits_log = os.environ.get(BITS_LOG_ENV) or None
        clear_rates()
        eval_logger.info(f"cotam_llava: {type(model).__name__}, codec={s.codec}, quality={self.quality}, "
                         f"canvas={config.canvas_size}, adapter={'on' if tower.adapter_enabled else 'off'}, "
                         f"guidance={'on' if self.edge.use_guidance else 'off'}")

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "CoTAMLlavaLMM":
        """lmms-eval's constructor path: model_args, plus its own ``--batch_size`` / ``--device``.

        A key given in model_args wins over lmms-eval's flag (whose default, batch size 1, is always passed);
        ``max_batch_size`` (for lmms-eval's automatic batch search) is not used.
        """
        args = parse_model_args(arg_string)
        for key in ("batch_size", "device"):
            value = (additional_config or {}).get(key)
            if value is not None and key not in args:
                args[key] = value
        return cls(**args)

    # ------------------------------------------------------------------ lmms properties
    @property
    def model(self) -> Any:
        return self._model

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # ------------------------------------------------------------------ coding
    def _canvas_picture(self, image: Any, video: bool = False) -> Image.Image:
        """The picture the edge would code, at the codec canvas: what a classical codec gets too."""
        from ..codec.container import ResizeMode
        from ..codec.pipeline import canvas_for

        picture = self.edge.picture(image, video)
        size, mode = canvas_for(picture.size, self.edge.config.canvas_size)
        if mode != ResizeMode.PAD and size != picture.size:
            picture = picture.resize(size, Image.BICUBIC)  # as the learned codec's edge resizes
        return picture

    def _classical_roundtrip(self, pictures: Sequence[Image.Image]) -> tuple[list[Image.Image], int]:
        decoded, bits = [], 0
        for picture in pictures:
            data = self.classical.encode(np.asarray(picture.convert("RGB")), self.quality)
            bits += 8 * len(data)
            decoded.append(Image.fromarray(self.classical.decode(data)))
        return decoded, bits

    def _code(self, visuals: list[Any]) -> _Coded:
        """Run one request's visuals through the chosen codec and count the real bits."""
        from ..imageio import to_pil

        if not visuals:
            return _Coded("text")
        from ..codec.video import is_video, read_frames

        codec = self.settings.codec
        videos = [v for v in visuals if isinstance(v, (str, os.PathLike)) and is_video(v)]
        if videos:  # video files (lmms-eval's video tasks pass paths)
            if len(visuals) != 1:
                raise ConfigError(f"cotam_llava takes one video and nothing else per request, got {len(visuals)} inputs")

            frames, _ = read_frames(visuals[0], self.settings.max_frames)
            pixels = sum(f.shape[0] * f.shape[1] for f in frames)
            if codec in LEARNED:
                stream = self.edge.encode_images(frames, self.quality, video=True)
                return _Coded("video", streams=[stream], rate=SampleRate(8 * len(stream), pixels, len(frames), 1, "video"))
            if codec == "none":
                return _Coded("video", pictures=[np.stack(frames)], rate=SampleRate(24 * pixels, pixels, len(frames), 1, "video"))
            decoded, bits = self._classical_roundtrip([self._canvas_picture(f, video=True) for f in frames])
            return _Coded("video", pictures=[np.stack([np.asarray(d) for d in decoded])],
                          rate=SampleRate(bits, pixels, len(frames), 1, "video"))
        images = [to_pil(v).convert("RGB") for v in visuals]
        pixels = sum(im.width * im.height for im in images)
        if codec in LEARNED:
            streams = [self.edge.encode_image(im, self.quality) for im in images]
            return _Coded("image", streams=streams, rate=SampleRate(8 * sum(map(len, streams)), pixels, 0, len(images)))
        if codec == "none":
            return _Coded("image", pictures=images, rate=SampleRate(24 * pixels, pixels, 0, len(images)))
        decoded, bits = self._classical_roundtrip([self._canvas_picture(im) for im in images])
        return _Coded("image", pictures=decoded, rate=SampleRate(bits, pixels, 0, len(images)))

    # ------------------------------------------------------------------ prompting
    def _prompt(self, context: str, coded: _Coded) -> str:
        host = self.processor.host
        token = getattr(host, "video_token" if coded.kind == "video" else "image_token", None)
        content: list[dict[str, str]] = []
        if coded.kind != "text" and not (token and token in context):  # tasks may place the tokens themselves
            content = [{"type": coded.kind}] * (1 if coded.kind == "video" else coded.rate.items)
        content.append({"type": "text", "text": context})
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def _inputs(self, prompts: list[str], coded: list[_Coded]) -> Any:
        kind = coded[0].kind
        if self.settings.codec in LEARNED and kind != "text":
            key = "video_bitstreams" if kind == "video" else "bitstreams"
            return self.processor(text=prompts, **{key: [s for c in coded for s in c.streams]}, padding=True)
        host = self.processor.host
        if kind == "text":
            return host(text=prompts, padding=True, return_tensors="pt")
        if kind == "video":
            if getattr(host, "video_processor", None) is None:
                raise ConfigError(f"codec={self.settings.codec} on videos feeds decoded frames to the host's own video "
                                  "processor, which this host lacks (transformers' video processors need torchvision)")
            return host(text=prompts, videos=[p for c in coded for p in c.pictures], padding=True, return_tensors="pt")
        return host(text=prompts, images=[p for c in coded for p in c.pictures], padding=True, return_tensors="pt")

    # ------------------------------------------------------------------ generation
    def _generate(self, prompts: list[str], coded: list[_Coded], gen_kwargs: dict[str, Any]) -> list[str]:
        gen = dict(gen_kwargs)
        until = gen.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        temperature = float(gen.get("temperature", 0) or 0)
        do_sample = temperature > 0  # lmms-eval tasks ask for greedy decoding with temperature 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(gen.get("max_new_tokens", 128)),
            "do_sample": do_sample,
            "num_beams": int(gen.get("num_beams", 1) or 1),
        }
        if do_sample:
            kwargs["temperature"] = temperature
            if gen.get("top_p") is not None:
                kwargs["top_p"] = float(gen["top_p"])
        if getattr(self._model.generation_config, "pad_token_id", None) is None:
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
            if pad is not None:
                kwargs["pad_token_id"] = pad
        inputs = self._inputs(prompts, coded).to(self._device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self._model.generate(**inputs, **kwargs)
        self._gen_time += time.perf_counter() - start
        new = out[:, inputs["input_ids"].shape[1]:]
        self._gen_tokens += int(new.numel())
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        answers = []
        for text in texts:
            for stop in until:
                if stop and stop in text:
                    text = text.split(stop, 1)[0]
            answers.append(text.strip())
        return answers

    def _record(self, request: tuple, coded: _Coded) -> None:
        _, _, _, doc_id, task, split = request
        doc = self.task_dict[task][split][doc_id]
        key = doc.get(DOC_KEY) if isinstance(doc, dict) else None
        if key is not None:
            record_rate(key, coded.rate)
        line = {"task": task, "split": split, "doc_id": doc_id, "codec": self.settings.codec, "quality": self.quality,
                **coded.rate.to_dict()}
        self.records.append(line)
        eval_logger.debug(f"cotam_llava bits: {line}")
        if self._bits_log:
            with open(self._bits_log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answer each request from its pictures after the codec; batches of ``batch_size`` with equal
        generation settings (lmms-eval's Collator), longest prompts first."""
        from tqdm import tqdm

        def order(args: tuple) -> tuple[int, str]:
            return -len(args[0]), args[0]

        collator = lmms_utils.Collator([r.args for r in requests], order, grouping=True)
        results: list[str] = []
        pbar = tqdm(total=len(requests), disable=self.rank != 0, desc="cotam_llava")
        for chunk in collator.get_batched(n=self.batch_size, batch_fn=None):
            gen_kwargs = chunk[0][1]
            coded, prompts = [], []
            for request in chunk:
                context, _, doc_to_visual, doc_id, task, split = request
                visuals = (doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else None) or []
                visuals = [v for group in visuals for v in (group if isinstance(group, (list, tuple)) else [group])]
                c = self._code(visuals)
                self._record(request, c)
                coded.append(c)
                prompts.append(self._prompt(context, c))
            answers: list[str | None] = [None] * len(chunk)
            for kind in dict.fromkeys(c.kind for c in coded):  # one generate call per media kind in the batch
                idx = [i for i, c in enumerate(coded) if c.kind == kind]
                for i, text in zip(idx, self._generate([prompts[i] for i in idx], [coded[i] for i in idx], gen_kwargs)):
                    answers[i] = text
            for request, text in zip(chunk, answers):
                results.append(text)
                self.cache_hook.add_partial("generate_until", (request[0], gen_kwargs), text)
            pbar.update(len(chunk))
        pbar.close()
        return collator.get_original(results)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("cotam_llava implements generate_until only (all the tasks in eval/tasks are "
                                  "generate_until tasks); loglikelihood / multiple_choice tasks are not supported")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("cotam_llava implements generate_until only (no multi-round tasks)")

    # ------------------------------------------------------------------ reporting
    def rate_summary(self) -> dict[str, Any]:
        """Mean bpp (image requests) and bits per frame (video requests), overall and per task."""

        def means(rows: list[dict]) -> dict[str, float]:
            out: dict[str, float] = {}
            bpp = [r["bpp"] for r in rows if r["kind"] == "image" and r["bpp"] is not None]
            bpf = [r["bits_per_frame"] for r in rows if r["kind"] == "video" and r["bits_per_frame"] is not None]
            if bpp:
                out["bpp"] = float(np.mean(bpp))
            if bpf:
                out["bits_per_frame"] = float(np.mean(bpf))
                out["video_bpp"] = float(np.mean([r["bpp"] for r in rows if r["kind"] == "video"]))
            out["requests"] = len(rows)
            out["bits"] = int(sum(r["bits"] for r in rows))
            return out

        by_task: dict[str, list[dict]] = defaultdict(list)
        for r in self.records:
            by_task[r["task"]].append(r)
        return {"codec": self.settings.codec, "quality": self.quality, **means(self.records),
                "tasks": {t: means(rows) for t, rows in sorted(by_task.items())}}

    def clean(self) -> None:
        """Called by lmms-eval once generation is over: report the rate (see the module docstring), then free."""
        if self.records:
            from lmms_eval.models.model_utils.gen_metrics import log_metrics

            summary = self.rate_summary()
            extra: dict[str, Any] = {"num_requests": summary["requests"]}
            for name in ("bpp", "bits_per_frame"):
                if name in summary:
                    extra[f"cotam_{name}"] = summary[name]
            for task, values in summary["tasks"].items():
                for name in ("bpp", "bits_per_frame"):
                    if name in values:
                        extra[f"cotam_{name}/{task}"] = values[name]
            speed = self._gen_tokens / self._gen_time if self._gen_time > 0 else 0.0
            log_metrics(total_elapsed_time=self._gen_time, total_gen_tokens=self._gen_tokens, avg_speed=speed,
                        additional_metrics=extra)
            shown = {k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in summary.items()
                     if k != "tasks"}
            eval_logger.info(f"cotam_llava rate: {shown}")
        super().clean()
