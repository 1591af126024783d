"""Database tables and the dataclasses passed to workflows and activities.

The dataclasses' modules do without `from __future__ import annotations`: Temporal's
converter calls `typing.get_type_hints` on every dataclass it decodes, and string
annotations are evaluated anew each time (5-7x the cost; docs/performance.md).
"""
