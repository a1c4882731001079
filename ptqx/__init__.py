"""ptqx: fast post-training quantization and membership-inference audits of quantized models."""

__version__ = "0.1.0"
