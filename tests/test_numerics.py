import json
import os
import re
import subprocess
import sys

import pytest

from clusterlens.core.numerics import OFF_SWITCH, PINS, cpu_flags, pin_applies, pin_cpu_kernels
from tests.code_deps import PROJECT

X86 = dict(machine="x86_64", flags={"sse2", "avx", "avx2", "fma"})


def test_pins_are_set_as_defaults_on_an_avx2_cpu():
    env = {}
    assert pin_cpu_kernels(env, **X86) == PINS
    assert env == PINS


def test_a_value_already_set_wins():
    env = {"OPENBLAS_CORETYPE": "Sandybridge", "ONEDNN_MAX_CPU_ISA": "AVX"}
    done = pin_cpu_kernels(env, **X86)
    assert env["OPENBLAS_CORETYPE"] == "Sandybridge" and env["ONEDNN_MAX_CPU_ISA"] == "AVX"
    assert "OPENBLAS_CORETYPE" not in done and done["ATEN_CPU_CAPABILITY"] == "avx2"
    # numpy refuses NPY_ENABLE_CPU_FEATURES and NPY_DISABLE_CPU_FEATURES together
    env = {"NPY_ENABLE_CPU_FEATURES": "X86_V3"}
    pin_cpu_kernels(env, **X86)
    assert "NPY_DISABLE_CPU_FEATURES" not in env and env["MKL_CBWR"] == "COMPATIBLE"


@pytest.mark.parametrize("machine, flags", [
    ("aarch64", {"asimd", "sve"}),       # not x86
    ("x86_64", {"sse2", "avx"}),         # no AVX2: the pinned kernels would not run
    ("x86_64", {"avx2"}),                # AVX2 without FMA
    ("x86_64", set()),                   # flags unreadable
])
def test_no_pin_where_the_cpu_lacks_avx2(machine, flags):
    env = {}
    assert pin_cpu_kernels(env, machine=machine, flags=flags) == {} and env == {}
    assert not pin_applies(machine, flags)


def test_the_off_switch():
    env = {OFF_SWITCH: "native"}
    assert pin_cpu_kernels(env, **X86) == {} and env == {OFF_SWITCH: "native"}


def test_cpu_flags_parse_proc_cpuinfo():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu SSE2 avx2 fma\n" \
           "processor\t: 1\nflags\t\t: fpu\n"
    assert cpu_flags(text) == {"fpu", "sse2", "avx2", "fma"}
    assert cpu_flags("processor : 0\n") is None


def test_pin_values_match_the_installed_libraries():
    from numpy._core._multiarray_umath import __cpu_dispatch__

    # every AVX-512 group numpy dispatches to is disabled, and nothing else (X86_V3 = AVX2 stays)
    avx512 = {d for d in __cpu_dispatch__ if d.startswith(("X86_V4", "AVX512"))}
    assert set(PINS["NPY_DISABLE_CPU_FEATURES"].split()) == avx512
    assert "X86_V3" in __cpu_dispatch__


PROBE = """
import json, os, sys, stages, numpy, threadpoolctl
from numpy._core._multiarray_umath import __cpu_features__
got = {"blas": sorted({i.get("architecture") for i in threadpoolctl.threadpool_info()
                       if i["user_api"] == "blas"}),
       "numpy_avx512": bool(__cpu_features__.get("X86_V4")),
       "env": {k: os.environ.get(k) for k in %r}}
if sys.argv[1] == "all":
    import torch, faiss
    got.update(torch=torch.backends.cpu.get_cpu_capability(),
               faiss=faiss.SIMDConfig.get_level_name())
print(json.dumps(got))
""" % sorted(PINS)


def _probe(what: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PINS and k != OFF_SWITCH}
    env.update(extra)
    out = subprocess.run([sys.executable, "-c", PROBE, what], cwd=PROJECT, env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(not pin_applies(), reason="the pin applies to x86-64 CPUs with AVX2 + FMA")
def test_a_stage_process_runs_the_pinned_kernels_and_a_users_choice_wins():
    # what `python -m stages.<name>` does first: import the stages package
    got = _probe("all")
    assert got["env"] == PINS
    assert got["blas"] == ["Haswell"]  # numpy's, scipy's and faiss' OpenBLAS
    assert got["torch"] == "AVX2" and got["faiss"] == "AVX2" and not got["numpy_avx512"]
    mine = _probe("numpy", OPENBLAS_CORETYPE="Sandybridge")
    assert mine["blas"] == ["Sandybridge"]
    assert mine["env"] == {**PINS, "OPENBLAS_CORETYPE": "Sandybridge"}
    assert _probe("numpy", **{OFF_SWITCH: "native"})["env"] == dict.fromkeys(PINS)


MKL_PROBE = """
import stages, torch
a = torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64) / 4096
torch.nn.functional.linear(a, a)
"""


@pytest.mark.skipif(not pin_applies(), reason="the pin applies to x86-64 CPUs with AVX2 + FMA")
def test_mkl_runs_its_cross_vendor_branch_in_a_stage_process():
    """MKL honours a branch it cannot run on this CPU by falling back to AUTO, silently; its
    verbose log names the branch each call really ran (``CNR:<branch>``)."""
    env = {k: v for k, v in os.environ.items() if k not in PINS and k != OFF_SWITCH}
    out = subprocess.run([sys.executable, "-c", MKL_PROBE], cwd=PROJECT, check=True,
                         env={**env, "MKL_VERBOSE": "1"}, capture_output=True, text=True,
                         timeout=120).stdout
    branches = set(re.findall(r"CNR:(\w+)", out))
    assert branches == {"COMPATIBLE"}, out[-2000:]


def test_samples_are_seeded_sorted_and_keep_every_class():
    import numpy as np

    from clusterlens.core.sampling import sample_rows, stratified_rows

    np.testing.assert_array_equal(sample_rows(5, 10, 0), np.arange(5))
    a, b = sample_rows(1000, 100, 3), sample_rows(1000, 100, 3)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, sample_rows(1000, 100, 4))
    y = np.repeat(np.arange(5), [900, 50, 30, 15, 5])
    rows = stratified_rows(y, 100, 0, min_per_class=10)
    counts = np.bincount(y[rows], minlength=5)
    assert counts.tolist() == [90, 10, 10, 10, 5]   # its share, at least 10, all of a small class
    np.testing.assert_array_equal(rows, stratified_rows(y, 100, 0, min_per_class=10))
    np.testing.assert_array_equal(stratified_rows(y, 2000, 0), np.arange(len(y)))
