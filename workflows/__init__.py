"""Temporal workflows: the per-repository sync loop, its detached children, and their pure cores.

Deliberately empty: the workflow sandbox imports this package for every module in it,
so nothing here may pull the workflows in. `worker.workflows()` lists them.
The workflow modules do without `from __future__ import annotations`: the sandbox
runs each run's module afresh, and `workflow.defn` then reads every handler's type
hints, which string annotations make it compile and evaluate again (docs/performance.md).
"""
