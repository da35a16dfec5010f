"""Reproducible, data-versioned ML pipeline: one module per DVC stage."""
