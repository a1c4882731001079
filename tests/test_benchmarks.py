"""The benchmark suite still runs: every file collects, and the cheapest case of each
benchmark runs once, untimed (``--benchmark-disable``), so an API change that breaks a
benchmark fails CI instead of the next person who measures. Timing is not tested here."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The smallest case of every benchmark function that runs on a CPU (the GPU file's cases
# skip here; it is collected all the same). Official-style OBC and the whole-network
# GPTQ/OBC runs take minutes even at their smallest and are left out.
SMOKE_CASES = [
    "bench_attacks.py::test_loo_native_small",
    "bench_attacks.py::test_loo_reference_small",
    "bench_batched.py::test_batched_logits[vmap-small_cnn-16x-digits-b512]",
    "bench_batched.py::test_batched_logits[loop-inference-form-small_cnn-16x-digits-b512]",
    "bench_grid.py::test_grid_search[native-64x576]",
    "bench_grid.py::test_grid_search[reference-64x576]",
    "bench_grid.py::test_fake_quant[native]",
    "bench_obc.py::test_native[64x576]",
    "bench_recon.py::test_soft_round_fwd_bwd[smallcnn-64x288-fused-native]",
    "bench_recon.py::test_soft_round_fwd_bwd[smallcnn-64x288-unfused-torch]",
    "bench_recon.py::test_recon_step[layer1-64@32-fused-native]",
    "bench_lowbit.py::test_lowbit_linear_cold[256x2304-1-ptqx-2bit]",
    "bench_lowbit.py::test_lowbit_linear_cold[256x2304-1-ptqx-4bit-int8act]",
    "bench_lowbit.py::test_lowbit_linear_cold[256x2304-1-dequant-then-linear]",
    "bench_lowbit.py::test_lowbit_linear_cold[256x2304-1-torch-int4]",
    "bench_lowbit.py::test_lowbit_vs_fp32_paired[256x2304-1-ptqx-ternary]",
    "bench_quant.py::test_resnet18_whole_network[rtn]",
    "bench_scores.py::test_logit_scores[native-small]",
    "bench_gpu.py",
]


def _pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO / "benchmarks",
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_every_benchmark_file_collects():
    files = sorted(p.name for p in (REPO / "benchmarks").glob("bench_*.py"))
    proc = _pytest("--collect-only", *files)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    collected = {Path(ln.split("::")[0]).name for ln in proc.stdout.splitlines() if "::" in ln}
    # bench_backends.py is a script (whole processes timed by wall clock), not a
    # pytest-benchmark file; every other bench_*.py must contribute cases.
    assert collected >= set(files) - {"bench_backends.py"}, sorted(collected)


@pytest.mark.slow
def test_cheapest_case_of_every_benchmark_runs():
    proc = _pytest("--benchmark-disable", *SMOKE_CASES)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout.splitlines()[-1], proc.stdout[-2000:]
