"""Collectors: host, process and topology samples of one node (psutil lives here)."""
