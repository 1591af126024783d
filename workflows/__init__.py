"""Temporal workflows: the per-repository sync loop, its detached children, and their pure cores.

Deliberately empty: the workflow sandbox imports this package for every module in it,
so nothing here may pull the workflows in. `worker.WORKFLOWS` lists them.
"""
