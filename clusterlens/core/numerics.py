"""Same numbers on every CPU: pin the SIMD kernels of the numeric libraries to AVX2.

numpy, the three OpenBLAS copies (numpy's, scipy's, faiss'), torch (ATen, oneDNN, MKL) and faiss
each pick their kernels at load time from the CPU they find. On an AVX-512 Intel Xeon they pick
AVX-512 kernels, on an AVX2-only AMD EPYC AVX2 (Haswell / Zen) ones; the two sum in a different
order, so results differ in the last bits, and an unstable ``np.argsort`` orders tied values
differently. Measured on the demo: oneDNN's AVX2 vs AVX kernels change 28% of the extracted
feature values (max 7e-5); the order of HDBSCAN's tied MST edges (numpy's SIMD argsort) moves
its NMI between 0.139392, 0.140186, 0.140247 and 0.141041 on identical input; NMF's W changes
with the OpenBLAS kernel (and moves the nmf k15 NMI). :func:`pin_cpu_kernels` sets every
library's "use at most AVX2" switch before the libraries load, so every x86-64 CPU with AVX2 and
FMA runs the same kernels. It only sets defaults: a variable already in the environment wins,
and ``CLUSTERLENS_CPU_KERNELS=native`` turns the pin off (faster AVX-512 / AMX kernels, e.g. for
``extract.precision: bf16`` on a Xeon; numbers then depend on the CPU). Results also depend on
the thread count (OpenBLAS and oneDNN split sums by thread), which the pin leaves alone.

The pin must run before numpy, scipy, torch or faiss is imported: ``stages/__init__.py`` calls
it, so every ``python -m stages.<name>`` process (and its DataLoader workers and torchrun
children, which inherit the environment) runs pinned. In a process that has already imported
numpy it still sets the variables for child processes but cannot change the loaded kernels.
This module imports nothing but the standard library.
"""
from __future__ import annotations

import os

OFF_SWITCH = "CLUSTERLENS_CPU_KERNELS"  # = native: no pin

# Each library's switch, and the value that caps it at AVX2 (checked against the installed
# versions by tests/test_numerics.py).
PINS: dict[str, str] = {
    # numpy's, scipy's and faiss' OpenBLAS (DYNAMIC_ARCH): Haswell kernels (AVX2 + FMA). AMD
    # Zen already gets the same kernels; an AVX-512 Xeon would get SkylakeX / Cooperlake ones.
    "OPENBLAS_CORETYPE": "Haswell",
    # numpy's own SIMD dispatch (sort / argsort, reductions, exp / log ...): no AVX-512 groups
    # (numpy 2.4 names; X86_V3, i.e. AVX2, stays).
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    # torch: ATen's vectorised CPU kernels, and oneDNN's convolutions / matmuls / fused graphs.
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    # torch's MKL (fp32 matmuls outside oneDNN, e.g. the sentence model's linear layers): the
    # COMPATIBLE branch, the one code path MKL runs on Intel and non-Intel CPUs alike. Its AVX2
    # branch is honoured on Intel CPUs only; an AMD CPU falls back to MKL's AUTO branch and
    # computes other bits (measured: the caption embeddings differed between the two kinds).
    "MKL_CBWR": "COMPATIBLE",
    # faiss-cpu >= 1.12 (one dynamically dispatched build): AVX2 kernels. Upper case: faiss
    # aborts on an unknown level name.
    "FAISS_SIMD_LEVEL": "AVX2",
    # numba (umap-learn, pynndescent) compiles for the host CPU; "generic" is baseline x86-64
    # with no host features (numba then leaves NUMBA_CPU_FEATURES empty), the same code on
    # every CPU, and a cache any CPU can reuse.
    "NUMBA_CPU_NAME": "generic",
}


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux), or None where it cannot be read.

    Parameters
    ----------
    cpuinfo : str or None
        The text of ``/proc/cpuinfo``; None reads the file.

    Returns
    -------
    set of str or None
        The lower-case flags of the first processor, e.g. ``{"avx2", "fma", ...}``.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read(1 << 16)
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.lower().split())
    return None


def pin_applies(machine: str | None = None, flags: set[str] | None = None) -> bool:
    """Whether this CPU gets the AVX2 pin: an x86-64 CPU with AVX2 and FMA.

    Parameters
    ----------
    machine : str or None
        The machine name, as ``platform.machine()`` gives it (None: this machine's).
    flags : set of str or None
        The CPU flags (None: :func:`cpu_flags` of this machine).
    """
    if machine is None:
        if hasattr(os, "uname"):
            machine = os.uname().machine  # not `platform`: ~10 ms of start-up in every stage
        else:
            import platform
            machine = platform.machine()
    if machine.lower() not in ("x86_64", "amd64"):
        return False
    flags = cpu_flags() if flags is None else flags
    return bool(flags) and {"avx2", "fma"} <= flags


def pin_cpu_kernels(environ=None, *, machine: str | None = None,
                    flags: set[str] | None = None) -> dict[str, str]:
    """Set :data:`PINS` as defaults in ``environ``, where the CPU has AVX2 (see module doc).

    Parameters
    ----------
    environ : mutable mapping or None
        The environment to set (None: ``os.environ``).
    machine, flags
        As for :func:`pin_applies` (None: this machine's).

    Returns
    -------
    dict
        The variables set by this call (empty when the pin does not apply, is switched off by
        ``CLUSTERLENS_CPU_KERNELS=native``, or every variable was already set).
    """
    env = os.environ if environ is None else environ
    if env.get(OFF_SWITCH, "").strip().lower() == "native" or not pin_applies(machine, flags):
        return {}
    done = {}
    for key, value in PINS.items():
        if key in env:
            continue  # the user's value wins
        if key == "NPY_DISABLE_CPU_FEATURES" and "NPY_ENABLE_CPU_FEATURES" in env:
            continue  # numpy refuses both at once
        env[key] = value
        done[key] = value
    return done
