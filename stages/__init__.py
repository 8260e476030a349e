"""clusterlens pipeline stages: one module per DVC stage, each a thin CLI over plain functions."""
