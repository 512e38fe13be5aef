"""Tiny random LLaVA-family hosts (LLaVA/CLIP, LLaVA-OneVision/SigLIP, InternVL/InternViT) built from configs.

Everything is offline: a word-level tokenizer built in memory, PIL image processors, random weights.
The hosts' video processors need torchvision (absent here), so processors are built without one.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import torch
from tokenizers import Tokenizer, models, pre_tokenizers

WORDS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>", "<img>", "</img>", "<IMG_CONTEXT>", "USER:",
         "ASSISTANT:", "what", "is", "this", "?"] + [f"w{i}" for i in range(49)]
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}{% if c['type']=='image' %}<image> "
    "{% elif c['type']=='video' %}<video> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
            vocab_size=len(WORDS), max_position_embeddings=1024)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
HOSTS = ("llava", "onevision", "internvl")


def tiny_tokenizer():
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>", "start_image_token": "<img>",
                              "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>"},
    )


@contextlib.contextmanager
def no_video_processor() -> Iterator[None]:
    """Let a host processor be built with ``video_processor=None`` (video processors need torchvision)."""
    from transformers.processing_utils import ProcessorMixin

    orig = ProcessorMixin.check_argument_for_proper_class

    def check(self, name, arg):
        return None if arg is None else orig(self, name, arg)

    with mock.patch.object(ProcessorMixin, "check_argument_for_proper_class", check):
        yield


def tiny_host(name: str, seed: int = 0, width: int = 32) -> tuple[Any, Any]:
    """(stock model in eval mode, stock processor) for "llava", "onevision" or "internvl".

    ``width``: hidden size of the vision and text models (bitsandbytes' CPU 4-bit kernels need multiples of 64).
    """
    import transformers as tf

    torch.manual_seed(seed)
    vision = dict(VISION, hidden_size=width, intermediate_size=2 * width)
    text = dict(TEXT, hidden_size=width, intermediate_size=2 * width)
    if name == "llava":
        cfg = tf.LlavaConfig(vision_config=dict(model_type="clip_vision_model", image_size=56, patch_size=14, **vision),
                             text_config=dict(model_type="llama", **text), image_token_index=4, image_seq_length=16)
        model = tf.LlavaForConditionalGeneration(cfg)
        ip = tf.CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
        proc = tf.LlavaProcessor(image_processor=ip, tokenizer=tiny_tokenizer(), patch_size=14,
                                 num_additional_image_tokens=1, vision_feature_select_strategy="default",
                                 chat_template=TEMPLATE)
    elif name == "onevision":
        from transformers.models.llava_onevision import LlavaOnevisionImageProcessorPil

        pins = [[56, 56], [56, 112], [112, 56], [112, 112]]
        cfg = tf.LlavaOnevisionConfig(
            vision_config=dict(model_type="siglip_vision_model", image_size=56, patch_size=14, **vision),
            text_config=dict(model_type="qwen2", **text), image_token_index=4, video_token_index=5,
            image_grid_pinpoints=pins, vision_feature_select_strategy="full", vision_feature_layer=-1)
        model = tf.LlavaOnevisionForConditionalGeneration(cfg)
        ip = LlavaOnevisionImageProcessorPil(size={"height": 56, "width": 56}, image_grid_pinpoints=pins)
        with no_video_processor():
            proc = tf.LlavaOnevisionProcessor(image_processor=ip, tokenizer=tiny_tokenizer(), video_processor=None,
                                              num_image_tokens=16, vision_feature_select_strategy="full",
                                              chat_template=TEMPLATE)
    elif name == "internvl":
        from transformers.models.got_ocr2 import GotOcr2ImageProcessorPil

        cfg = tf.InternVLConfig(
            vision_config=dict(model_type="internvl_vision", image_size=[56, 56], patch_size=[14, 14], **vision),
            text_config=dict(model_type="qwen2", **text), image_token_id=WORDS.index("<IMG_CONTEXT>"),
            image_seq_length=4)
        model = tf.InternVLForConditionalGeneration(cfg)
        ip = GotOcr2ImageProcessorPil(size={"height": 56, "width": 56}, crop_to_patches=False)
        with no_video_processor():
            proc = tf.InternVLProcessor(image_processor=ip, tokenizer=tiny_tokenizer(), video_processor=None,
                                        image_seq_length=4, chat_template=TEMPLATE.replace("<image>", "<IMG_CONTEXT>"))
    else:
        raise ValueError(name)
    return model.eval(), proc


def tiny_codec(seed: int = 0):
    from cotam_llava.codec.model import CoTAMELIC

    codec = CoTAMELIC.from_preset("tiny", seed=seed)
    codec.finalize()
    return codec


def build_cotam(name: str, folder: Path, codec=None, width: int = 32) -> tuple[Any, Any, Any, Any]:
    """(CoTAM model, CoTAMProcessor, stock model, stock processor); the stock model is saved under folder/host."""
    from cotam_llava.models import CoTAMProcessor, cotam_class_for

    stock, stock_proc = tiny_host(name, width=width)
    stock.save_pretrained(folder / "host")
    codec = codec if codec is not None else tiny_codec()
    model = cotam_class_for(stock.config.model_type).from_host_pretrained(
        folder / "host", codec, image_processor=stock_proc.image_processor).eval()
    return model, CoTAMProcessor(stock_proc, model.vision_tower.cotam_config, model.codec), stock, stock_proc


def chat_prompt(processor: Any, kind: str = "image", n: int = 1) -> str:
    content = [{"type": kind}] * n + [{"type": "text", "text": "what is this ?"}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
