"""experiments.bad_inputs: every bad input on the probe list ends in a clear error or a right result."""

from __future__ import annotations

import pytest

from experiments.bad_inputs import PROBES, Probe, run_probe


@pytest.mark.parametrize("probe", PROBES, ids=[probe.name for probe in PROBES])
def test_a_bad_input_ends_clear_or_recovered(probe: Probe) -> None:
    row = run_probe(probe)
    assert row["outcome"] in ("clear", "recovered"), f"{row['outcome']}: {row['message']}"


def test_the_registry_has_enough_probes_with_unique_names() -> None:
    names = [probe.name for probe in PROBES]
    assert len(names) >= 50 and len(set(names)) == len(names)
