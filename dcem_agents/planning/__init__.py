"""The planning layer: controllers (full-space CEM, latent DCEM) that optimize action sequences on a model."""
