"""Treecast's database work that the activities share: one module per kind of row.

Front doors never come here directly; they go through `treecast.service`.
"""
