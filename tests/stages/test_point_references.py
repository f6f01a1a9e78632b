"""scripts/point_references.py: the oracle and the best task-agnostic policy through the run's own protocol."""

import re

from smoke import load_script


def test_the_oracle_beats_the_best_task_agnostic_policy_on_the_smoke_run(smoke_run, capsys):
    _, run_dir = smoke_run
    load_script("point_references").main(run_dir)
    out = capsys.readouterr().out
    oracle = re.search(r"oracle \(protocol\): train (\S+), test (\S+)", out)
    agnostic = re.search(r"task-agnostic, heading for .* \(protocol\): train (\S+), test (\S+)", out)
    assert oracle and agnostic, out
    assert float(oracle[1]) >= float(agnostic[1])  # the agnostic point is chosen on the training tasks
