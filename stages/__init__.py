"""clusterlens pipeline stages: one module per DVC stage, each a thin CLI over plain functions.

Importing the package pins the numeric libraries' CPU kernels to AVX2 (as defaults, before any
stage imports numpy or torch), so every CPU kind computes the same numbers: see
:mod:`clusterlens.core.numerics`.
"""
from clusterlens.core.numerics import pin_cpu_kernels

pin_cpu_kernels()
