"""ptqx: fast post-training quantization and membership-inference audits of quantized models."""

__version__ = "0.1.0"


def quantize(model, *, method, bits, calib=None, layer_bits=None, **options):
    """Quantize a model's weights; see :func:`ptqx.quant.quantize` (imported lazily so that
    ``import ptqx`` stays cheap and does not load the native kernels)."""
    from ptqx.quant import quantize as _quantize

    return _quantize(model, method=method, bits=bits, calib=calib, layer_bits=layer_bits, **options)


def audit(config=None, /, **settings):
    """Run (or resume) a privacy audit; see :func:`ptqx.experiment.audit`.

    ``config`` is an :class:`ptqx.experiment.AuditConfig`, a path to a TOML file, or None
    (then ``settings`` are AuditConfig fields, e.g. ``ptqx.audit(dataset="digits")``).
    Returns :class:`ptqx.experiment.AuditResults`.
    """
    from ptqx.experiment import AuditConfig
    from ptqx.experiment import audit as _audit

    run_kw = {
        k: settings.pop(k) for k in ("progress", "executor", "on_event", "report") if k in settings
    }
    if config is None:
        config = AuditConfig(**settings)
    elif not isinstance(config, AuditConfig):
        config = AuditConfig.from_toml(config, **settings)
    elif settings:
        raise TypeError("pass either an AuditConfig or settings, not both")
    return _audit(config, **run_kw)
