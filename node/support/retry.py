"""When something that failed is tried again (a delivery, a study's routing): exponential
backoff, capped.

A pure function of the attempt count, so the schedule is the same in every process and after a
restart; the caller stores ``attempts`` and computes its next try from it.
"""

from __future__ import annotations

from datetime import timedelta


def next_attempt_delay(
    attempt: int,
    *,
    base: timedelta = timedelta(seconds=30),
    factor: float = 2,
    cap: timedelta = timedelta(hours=1),
) -> timedelta:
    """How long to wait after failed attempt number ``attempt`` (1 for the first failure).

    ``base`` after the first failure, then ``factor`` times longer after each further one, never
    more than ``cap``: 30 s, 1 min, 2 min, 4 min ... 1 h with the defaults.
    """
    if attempt < 1:
        raise ValueError(f"attempt is {attempt}; failed attempts are counted from 1")
    if base <= timedelta(0):
        raise ValueError(f"base delay {base.total_seconds():g} s must be more than 0 s")
    if factor < 1:
        raise ValueError(f"factor {factor:g} must be at least 1")
    if cap < base:
        raise ValueError(
            f"cap {cap.total_seconds():g} s is less than the base delay {base.total_seconds():g} s"
        )
    delay = base
    # Multiply step by step rather than factor ** (attempt - 1): a large attempt count cannot
    # overflow, and the loop stops at the cap after a few dozen steps at most.
    for _ in range(attempt - 1):
        if factor == 1 or delay >= cap:
            break
        delay = delay * factor
    return min(delay, cap)
