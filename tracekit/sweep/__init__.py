"""Sweeps: one experiment at several points, several runs each, and the statistics that compare them.

``points`` expands a sweep section into its points and their run order; ``run`` runs them (through
tracekit.experiment.runner). The statistics and the table (``stats``, ``figures``, ``grouping``,
``summary``, ``sweep_report``, ``compare``) need no Ansible: ``tracekit compare`` and a finished sweep
import them alone.
"""
