"""How the stateful tests run: their sizes, no deadline, and the health checks slow I/O trips."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine


def stateful_case(machine: type[RuleBasedStateMachine], *, examples: int, steps: int) -> type:
    """``machine``'s ``TestCase``, running ``examples`` sequences of up to ``steps`` rules each.

    Steps write and read files, so there is no per-step deadline, and the
    health checks for slow or heavily filtered data generation are off.
    """
    machine.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    return machine.TestCase
