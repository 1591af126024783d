"""The property-based tests' budget: a few seconds each by default (`make test`), much
longer under `make fuzz` (HYPOTHESIS_PROFILE=fuzz), a quarter of the default under
`make unit` (HYPOTHESIS_PROFILE=unit: the quick loop while working; `make test` in CI runs
the full default). Per-test settings, so importing this module changes no global profile."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "")
FUZZ = PROFILE == "fuzz"
QUICK = PROFILE == "unit"


def examples(default: int) -> int:
    """How many examples a test with `default` runs under the chosen profile."""
    if FUZZ:
        return 20_000
    return max(default // 4, 3) if QUICK else default


def budget(default: int) -> settings:
    """`examples(default)` examples, no deadline."""
    return settings(max_examples=examples(default), deadline=None)


# The budget of the tests whose examples are slow to generate.
bounded = settings(budget(300), suppress_health_check=[HealthCheck.too_slow])
