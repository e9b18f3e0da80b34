"""Scenario source: a seeded synthetic multi-asset market with labelled regimes.

- :mod:`~connectors.scenario.model`: pure generator — :class:`ScenarioParams` (calibrated
  defaults, presets ``fire-sale`` and ``calm``), :func:`generate` (canonical events with their
  ground-truth phase), :func:`phase_schedule` (the labelled phase intervals).
- :mod:`~connectors.scenario.source`: :func:`run_scenario`, which paces the events onto a sink
  with the live connectors' topics and keys and writes the labels.
"""

from connectors.scenario.model import (
    PRESETS,
    AssetDynamics,
    Phase,
    PhaseInterval,
    PhaseName,
    PhaseSchedule,
    Preset,
    ScenarioParams,
    ScenarioTick,
    generate,
    phase_schedule,
)
from connectors.scenario.source import ScenarioRun, run_scenario, write_labels

__all__ = [
    "PRESETS",
    "AssetDynamics",
    "Phase",
    "PhaseInterval",
    "PhaseName",
    "PhaseSchedule",
    "Preset",
    "ScenarioParams",
    "ScenarioRun",
    "ScenarioTick",
    "generate",
    "phase_schedule",
    "run_scenario",
    "write_labels",
]
