"""The trace pipeline: raw node files -> cctf/ -> OpenDC workload, and its checks."""
