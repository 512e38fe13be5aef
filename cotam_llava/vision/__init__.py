"""The vision tower (decode bitstreams, feed the host's encoder and the latent adapter) and the edge encoder."""
