"""Tracekit: reproducible cloud trace-collection experiments."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # tracekit.open_run without importing pyarrow for every command line (the CLI starts in 40 ms).
    if name == "open_run":
        from tracekit.analysis import open_run

        return open_run
    raise AttributeError(f"module 'tracekit' has no attribute {name!r}")
