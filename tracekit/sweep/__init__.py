"""Sweeps: many runs of one experiment over a matrix of values, and the statistics that compare them.

The statistics and the table (``stats``, ``figures``, ``grouping``, ``summary``, ``sweep_report``,
``compare``) need no Ansible: ``tracekit compare`` and a finished sweep import them alone.
"""
