"""Tracekit: reproducible cloud trace-collection experiments."""

__version__ = "0.1.0"
