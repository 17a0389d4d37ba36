"""The load scenarios: how many simulated students, how fast they arrive, for how long.

One declaration, read by the Locust shape (``load/locustfile.py``) and by the driver (``load/run.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    until: float  # seconds from the start of the run
    users: int
    spawn_rate: float  # users started (or stopped) per second on the way to ``users``


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    stages: tuple[Stage, ...]

    @property
    def duration(self) -> float:
        return self.stages[-1].until

    @property
    def peak_users(self) -> int:
        return max(s.users for s in self.stages)

    def at(self, t: float) -> tuple[int, float] | None:
        """Users and spawn rate wanted at ``t`` seconds; None once the scenario is over."""
        for stage in self.stages:
            if t < stage.until:
                return stage.users, stage.spawn_rate
        return None


def _steady(name: str, description: str, users: int, seconds: float, spawn_rate: float) -> Scenario:
    return Scenario(name, description, (Stage(seconds, users, spawn_rate),))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        _steady("smoke", "20 students for 60 s: correctness only (runs in make test)", 20, 60, 10),
        _steady("normal", "100 students, a normal afternoon", 100, 300, 5),
        _steady("peak", "500 students, the evening peak", 500, 300, 10),
        _steady("stress", "1,000 students, twice the peak", 1000, 300, 20),
        Scenario(
            "spike",
            "0 -> 500 students in 10 s (a class told to start now), 2 min, then all leave; 1 min after",
            (Stage(10, 500, 50), Stage(130, 500, 50), Stage(140, 0, 50), Stage(200, 0, 50)),
        ),
        _steady("soak", "100 students for 30 minutes: leaks, slow growth, expiring tokens", 100, 1800, 5),
    )
}
