"""Vision encoders with real pretrained weights (see :mod:`cotam_llava.vision.dinov2_onnx`)."""
