"""A short pass of the fuzz and fault suite (`e2e/fuzz.py`): generated, mutated and garbage statements, the
resource-bomb catalogue and a query mix under sandbox faults, through ADBC against `omnisql dev`."""

import os

import fuzz


def test_short_fuzz_pass_finds_no_death_hang_leak_or_silent_wrong_answer():
    seed = int(os.environ.get("OMNISQL_FUZZ_SEED", "7"))
    run, seconds = fuzz.fuzz(statements=300, seed=seed, fault_rounds=30)
    text = fuzz.report(run, seconds, seed)
    print(text)
    assert run.stats["statements"] >= 300 + len(fuzz.BOMBS)
    assert run.stats["ok"] > 50 and run.stats["errors"] > 50, "the generator should produce both answers and errors"
    assert not run.verdict(), text
