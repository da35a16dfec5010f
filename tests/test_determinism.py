"""mlpipeline.determinism: the CPU kernels are pinned (when mlpipeline is imported) before torch
chooses them, and the stages compute with kernels whose results do not depend on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlpipeline.determinism import CPU_KERNEL_PINS, pin_cpu_kernels

AVX2_FLAGS = "flags\t\t: fpu sse2 avx fma avx2 bmi2\n"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    for name in CPU_KERNEL_PINS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_pins_every_library_on_an_avx2_cpu(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text("processor\t: 0\n" + AVX2_FLAGS)
    assert pin_cpu_kernels(tmp_path / "cpuinfo") == CPU_KERNEL_PINS


def test_a_value_already_set_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(AVX2_FLAGS)
    clean_env.setenv("MKL_CBWR", "AUTO")
    assert "MKL_CBWR" not in pin_cpu_kernels(tmp_path / "cpuinfo")


@pytest.mark.parametrize("flags", ["flags\t\t: fpu sse2 avx\n", ""])
def test_leaves_a_cpu_without_avx2_alone(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, flags: str
) -> None:
    (tmp_path / "cpuinfo").write_text(flags)
    assert pin_cpu_kernels(tmp_path / "cpuinfo") == {}
    assert pin_cpu_kernels(tmp_path / "missing") == {}


@pytest.mark.skipif(
    "avx2" not in (Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""),
    reason="the pins apply to x86-64 CPUs with AVX2 only",
)
def test_torch_runs_the_pinned_kernels_in_a_stage_process() -> None:
    # a fresh process, as a stage is: prepare_process first is what every stage's CLI does
    code = (
        "import os; from mlpipeline.determinism import prepare_process, use_portable_kernels; "
        "prepare_process(); import torch; use_portable_kernels(1); "
        "print(torch.backends.cpu.get_cpu_capability(), os.environ['MKL_CBWR'], "
        "torch.get_num_threads(), torch.backends.mkldnn.enabled, torch._C._get_nnpack_enabled())"
    )
    env = {k: v for k, v in os.environ.items() if k not in CPU_KERNEL_PINS}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["AVX2", "COMPATIBLE", "1", "False", "False"], out.stderr
