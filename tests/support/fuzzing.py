"""The property-based tests' budget: a few seconds each by default, much longer under
`make fuzz` (HYPOTHESIS_PROFILE=fuzz). Per-test settings, so importing this module
changes no global profile."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"


def budget(examples: int) -> settings:
    """`examples` examples (20,000 under `make fuzz`), no deadline."""
    return settings(max_examples=20_000 if FUZZ else examples, deadline=None)


# The budget of the tests whose examples are slow to generate.
bounded = settings(budget(300), suppress_health_check=[HealthCheck.too_slow])
