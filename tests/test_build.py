"""The op boundary itself: every op defined, native kernels loaded where required."""

import torch

import ptqx.ops
from ptqx.ops import info

from .conftest import require_native


def test_every_schema_is_defined():
    for name in ptqx.ops.OP_NAMES:
        assert hasattr(torch.ops.ptqx, name), name


def test_native_loaded_when_required():
    if require_native():
        assert ptqx.ops.STATUS.loaded, ptqx.ops.STATUS.error
        missing = info.native_ops_missing("CPU")
        assert not missing, f"ops without a native CPU kernel: {missing}"


def test_info_lists_every_op():
    text = info.describe()
    for name in ptqx.ops.OP_NAMES:
        assert name in text
