"""The one place that defines every ``torch.ops.ptqx`` schema.

Each op gets three things here:
1. its schema (``torch.library.Library("ptqx", "DEF")``);
2. its pure-PyTorch reference from ``reference.py``, registered as the
   CompositeExplicitAutograd kernel: the default that serves any device with no native
   kernel, so ptqx works even where nothing was compiled (bitsandbytes' pattern);
3. a fake (meta) kernel, so the ops trace under ``torch.compile``.

Native kernels (``csrc/cpu``, ``csrc/cuda``) register with ``TORCH_LIBRARY_IMPL(ptqx,
CPU|CUDA)`` and take precedence over the reference on their device.

Conventions shared by all ops: weights are ``[R, C]`` (R output channels, C inputs per
channel; conv weights are flattened to ``[R, C*kh*kw]``), quantization is per output
channel with float32 ``scale[R]`` and ``zero[R]`` (zero holds an integer value), codes
are ``q = clamp(round_half_even(w / scale) + zero, 0, maxq)`` and the dequantized value
is ``scale * (q - zero)``.
"""

from __future__ import annotations

import functools

import torch

from . import reference

LIB = torch.library.Library("ptqx", "DEF")

# name -> schema. Keep in sync with TORCH_LIBRARY_IMPL blocks in csrc/.
SCHEMAS: dict[str, str] = {
    "quantize_codes": "quantize_codes(Tensor w, Tensor scale, Tensor zero, int maxq) -> Tensor",
    "fake_quant": "fake_quant(Tensor w, Tensor scale, Tensor zero, int maxq) -> Tensor",
    "grid_search": (
        "grid_search(Tensor w, int maxq, bool symmetric, bool include_zero, float norm, "
        "int grid, int steps) -> (Tensor, Tensor)"
    ),
    "obc_quantize_rows": (
        "obc_quantize_rows(Tensor weight, Tensor hinv, Tensor scale, Tensor zero, int maxq) -> Tensor"
    ),
    "obc_quantize_rows_order": (
        "obc_quantize_rows_order(Tensor weight, Tensor hinv, Tensor scale, Tensor zero, int maxq) "
        "-> (Tensor, Tensor)"
    ),
    "pack_weights": "pack_weights(Tensor codes, int bits) -> Tensor",
    "unpack_weights": "unpack_weights(Tensor packed, int bits, int cols) -> Tensor",
    "lowbit_linear": (
        "lowbit_linear(Tensor x, Tensor packed, Tensor scale, Tensor zero, int bits, "
        "Tensor? bias=None) -> Tensor"
    ),
    "lowbit_linear_int8act": (
        "lowbit_linear_int8act(Tensor x, Tensor packed, Tensor scale, Tensor zero, int bits, "
        "Tensor? bias=None) -> Tensor"
    ),
    "logit_scores": "logit_scores(Tensor logits, Tensor labels) -> Tensor",
    "lira_loo_stats": "lira_loo_stats(Tensor ref_scores, Tensor keep) -> (Tensor, Tensor)",
    "adaround_forward": (
        "adaround_forward(Tensor w_floor, Tensor alpha, Tensor scale, Tensor zero, int maxq, "
        "float beta) -> (Tensor, Tensor)"
    ),
    "adaround_backward": (
        "adaround_backward(Tensor grad_w, Tensor grad_reg, Tensor w_floor, Tensor alpha, "
        "Tensor scale, Tensor zero, int maxq, float beta) -> Tensor"
    ),
}


def _contiguous_outputs(fn):
    """The reference as an op kernel: outputs made contiguous, as every native kernel's are.

    Elementwise torch ops keep a transposed input's strides, so without this the same op
    would return different layouts on a device with a native kernel and one without, and
    one set of fake kernels could not describe both. ``.contiguous()`` of a contiguous
    tensor is the tensor itself: no copy on the usual path.
    """

    @functools.wraps(fn)
    def kernel(*args):
        out = fn(*args)
        if isinstance(out, tuple):
            return tuple(t.contiguous() for t in out)
        return out.contiguous()

    return kernel


for _name, _schema in SCHEMAS.items():
    LIB.define(_schema)
    LIB.impl(_name, _contiguous_outputs(getattr(reference, _name)), "CompositeExplicitAutograd")


# ---------------------------------------------------------------------------------------
# Fake kernels: output metadata only. Every native kernel reads ``.contiguous()`` inputs
# and returns a fresh contiguous tensor, so the fakes build outputs from the shape alone
# (``new_empty``), never with ``empty_like``, which would copy a transposed input's
# strides: a stride the real kernel does not produce breaks opcheck and, under
# torch.compile, any layout-dependent use of the result (``.view(-1)``).


@torch.library.register_fake("ptqx::quantize_codes")
def _quantize_codes_fake(w, scale, zero, maxq):
    return w.new_empty(w.shape, dtype=torch.uint8)


@torch.library.register_fake("ptqx::fake_quant")
def _fake_quant_fake(w, scale, zero, maxq):
    return w.new_empty(w.shape)


@torch.library.register_fake("ptqx::grid_search")
def _grid_search_fake(w, maxq, symmetric, include_zero, norm, grid, steps):
    rows = w.shape[0]
    return w.new_empty((rows,), dtype=torch.float32), w.new_empty((rows,), dtype=torch.float32)


@torch.library.register_fake("ptqx::obc_quantize_rows")
def _obc_fake(weight, hinv, scale, zero, maxq):
    return weight.new_empty(weight.shape)


@torch.library.register_fake("ptqx::obc_quantize_rows_order")
def _obc_order_fake(weight, hinv, scale, zero, maxq):
    return weight.new_empty(weight.shape), weight.new_empty(weight.shape, dtype=torch.int64)


@torch.library.register_fake("ptqx::pack_weights")
def _pack_fake(codes, bits):
    return codes.new_empty(
        (codes.shape[0], reference.packed_row_bytes(codes.shape[1], bits)), dtype=torch.uint8
    )


@torch.library.register_fake("ptqx::unpack_weights")
def _unpack_fake(packed, bits, cols):
    return packed.new_empty((packed.shape[0], cols), dtype=torch.uint8)


@torch.library.register_fake("ptqx::lowbit_linear")
def _lowbit_linear_fake(x, packed, scale, zero, bits, bias=None):
    return x.new_empty((*x.shape[:-1], scale.shape[0]))


@torch.library.register_fake("ptqx::lowbit_linear_int8act")
def _lowbit_linear_int8act_fake(x, packed, scale, zero, bits, bias=None):
    return x.new_empty((*x.shape[:-1], scale.shape[0]))


@torch.library.register_fake("ptqx::logit_scores")
def _logit_scores_fake(logits, labels):
    return logits.new_empty(logits.shape[:-1], dtype=torch.float64)


@torch.library.register_fake("ptqx::lira_loo_stats")
def _lira_loo_stats_fake(ref_scores, keep):
    n, m, v = ref_scores.shape
    return ref_scores.new_empty((6, n, m, v)), keep.new_empty((2, n, m), dtype=torch.int64)


@torch.library.register_fake("ptqx::adaround_forward")
def _adaround_forward_fake(w_floor, alpha, scale, zero, maxq, beta):
    return alpha.new_empty(alpha.shape), alpha.new_empty(())


@torch.library.register_fake("ptqx::adaround_backward")
def _adaround_backward_fake(grad_w, grad_reg, w_floor, alpha, scale, zero, maxq, beta):
    return alpha.new_empty(alpha.shape)
