"""Measurements: codec benchmarks, BD-rate, and the offline real-weight proxies (DINOv2 token
fidelity, RapidOCR on text drawn on photos: ``proxies``, ``text_overlay``, ``proxy_report``)."""
