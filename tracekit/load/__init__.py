"""``tracekit load``: an open-loop HTTP load generator (plan -> schedule -> requests -> results, summary)."""
