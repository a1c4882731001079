"""ptqx: fast post-training quantization and membership-inference audits of quantized models."""

__version__ = "0.1.0"


def quantize(model, *, method, bits, calib=None, layer_bits=None, **options):
    """Quantize a model's weights; see :func:`ptqx.quant.quantize` (imported lazily so that
    ``import ptqx`` stays cheap and does not load the native kernels)."""
    from ptqx.quant import quantize as _quantize

    return _quantize(model, method=method, bits=bits, calib=calib, layer_bits=layer_bits, **options)
