"""The guardrail gate: a screening aspect's JSON verdict releases or withholds the answer.

Only the declared boolean field is read, never free text. A screen that failed, or whose answer
has no usable verdict, withholds the answer too (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..recipe.section import Guard
from ..records import TaskResult


@dataclass(frozen=True)
class Verdict:
    """The gate's decision over every screen result of the run."""

    flagged: bool
    reason: str
    screen_failed: bool = False

    def details(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "reason": self.reason, "screen_failed": self.screen_failed}


def screen_verdict(
    screens: Sequence[TaskResult], values: Mapping[int, Any], guard: Guard
) -> Verdict:
    """Flagged when any screen flags or fails; the reasons say which and why."""
    flags, failures = [], []
    for result in screens:
        value = values.get(result.task.index)
        if not result.succeeded or value is None:
            problem = result.error or "it gave no usable verdict"
            failures.append(f"the screen failed ({result.task.label}: {problem})")
            continue
        flag = value.get(guard.flag) if isinstance(value, dict) else None
        if not isinstance(flag, bool):
            failures.append(
                f"the screen failed ({result.task.label}: '{guard.flag}' is not true or false)"
            )
        elif flag:
            reason = value.get(guard.reason)
            flags.append(str(reason).strip() if reason else "no reason given")
    if not screens:
        failures.append("the screen failed (no screening call was made)")
    if failures or flags:
        reasons = list(dict.fromkeys([*flags, *failures]))
        return Verdict(True, "; ".join(reasons), screen_failed=bool(failures))
    return Verdict(False, "")
