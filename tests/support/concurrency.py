"""Running one call in several threads at once."""

from __future__ import annotations

import threading
from collections.abc import Callable


def at_once(call: Callable[[], object], times: int) -> list[object]:
    """Run `call` in `times` threads started together; what each returned or raised,
    in the order they finished."""
    results: list[object] = []

    def one() -> None:
        try:
            results.append(call())
        except Exception as exc:  # shown by the caller's assert
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
