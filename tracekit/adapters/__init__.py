"""Adapters turn work into invocation events: wrap (any command), ffmpeg."""
