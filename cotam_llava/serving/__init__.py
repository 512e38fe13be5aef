"""Serving CoTAM models on vLLM: an OpenAI-compatible endpoint that takes ``.cotam`` bitstreams (``cotam serve``).

::

    edge device ─image─▶ EdgeEncoder (the model's codec, canvas, quality, guidance) ─▶ .cotam bytes
        ─POST /v1/chat/completions, content part
             {"type": "image_url", "image_url": {"url": "data:application/x-cotam;base64,..."}}─▶
    cotam serve (this package, the project's Python)
        requests.py  find the parts, check sizes, parse and validate each container (limits, CRCs, codec id)
        vision.py    decode (entropy decoding + synthesis) ─▶ tower + adapter ─▶ host projector, batched
        server.py    replace each part by vLLM's {"type": "image_embeds", ...}; proxy to vLLM; add bits / bpp
        backend.py   vLLM's OpenAI server as a child process on loopback (its own Python: .venv-serve on CPU)
        export.py    the stock host folder vLLM loads (adapter dropped, vision keys in the llava-hf layout)
    vLLM ─the host's language model on the embeddings (continuous batching, tensor / pipeline parallel)─▶ answer

``client.py`` is the edge side (stdlib only: encodes with the model's own settings, posts, reads bits and bpp);
``cli.py`` holds the argument handling of ``cotam serve`` and ``cotam chat --server``. See docs/serving.md.
Importing this package imports neither aiohttp nor vLLM.
"""

from .requests import COTAM_MEDIA_TYPE, RequestError, cotam_content_part, cotam_data_uri

__all__ = ["COTAM_MEDIA_TYPE", "RequestError", "cotam_content_part", "cotam_data_uri"]
