"""Plant the one-line bugs of issue 23 one at a time, run the test meant to catch each, restore the file.

`make planted-bugs` (about a minute). Prints "caught" or "MISSED" per bug and exits 1 if any was missed. Each
entry: (what the bug is, file, exact original text, the bug, the test that must fail, the older unit test of the
same code, for comparison with `--old`). The file is restored even if the run is interrupted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BUGS = [
    (
        'mbml act: argmin of Q_D',
        'mtrl/algos/mbml.py',
        'squeeze(-1).argmax(-1)\n        chosen',
        'squeeze(-1).argmin(-1)\n        chosen',
        'tests/algos/test_loss_terms.py',
        'tests/algos/test_mbml.py',
    ),
    (
        'relabelled rows keep original rewards',
        'mtrl/rl/batches.py',
        '        relabelled[..., -1] = np.take_along_axis(self.rewards, tt, 2)\n',
        '',
        'tests/stages/test_relabelled_batches.py',
        '',
    ),
    (
        'BCQ target: no terminal mask',
        'mtrl/algos/bcq.py',
        'gamma * (1 - terminals) * soft.amax(-1)',
        'gamma * soft.amax(-1)',
        'tests/algos/test_targets.py',
        'tests/algos/test_bcq.py',
    ),
    (
        'BCQ target: mean over candidates, not max',
        'mtrl/algos/bcq.py',
        'soft.amax(-1)',
        'soft.mean(-1)',
        'tests/algos/test_targets.py',
        'tests/algos/test_bcq.py',
    ),
    (
        'BCQ target: no soft clipping (min only)',
        'mtrl/algos/bcq.py',
        'soft = lmbda * torch.minimum(next_q1, next_q2) + (1 - lmbda) * torch.maximum(next_q1, next_q2)',
        'soft = torch.minimum(next_q1, next_q2)',
        'tests/algos/test_targets.py',
        'tests/algos/test_bcq.py',
    ),
    (
        'SAC target: no entropy term',
        'mtrl/algos/sac.py',
        '(torch.minimum(next_q1, next_q2) - alpha * next_log_prob)',
        'torch.minimum(next_q1, next_q2)',
        'tests/algos/test_targets.py',
        'tests/algos/test_sac.py',
    ),
    (
        'SAC target: first twin only',
        'mtrl/algos/sac.py',
        '(torch.minimum(next_q1, next_q2) - alpha',
        '(next_q1 - alpha',
        'tests/algos/test_targets.py',
        'tests/algos/test_sac.py',
    ),
    (
        'SAC target: no terminal mask',
        'mtrl/algos/sac.py',
        'gamma * (1.0 - terminals) * (',
        'gamma * (',
        'tests/algos/test_targets.py',
        'tests/algos/test_sac.py',
    ),
    (
        'PEARL target: no terminal mask',
        'mtrl/algos/batch_pearl.py',
        'gamma * (1 - terminals) * next_v',
        'gamma * next_v',
        'tests/algos/test_targets.py',
        'tests/algos/test_batch_pearl.py',
    ),
    (
        'MBML total: KL term dropped',
        'mtrl/algos/mbml.py',
        'total = triplet + q + self.cfg.kl_beta * kl + g + xi',
        'total = triplet + q + g + xi',
        'tests/algos/test_loss_terms.py',
        'tests/algos/test_mbml.py',
    ),
    (
        'PEARL: KL weight dropped from the encoder loss',
        'mtrl/algos/batch_pearl.py',
        '(critic_loss + cfg.kl_beta * kl).backward()',
        'critic_loss.backward()',
        'tests/algos/test_loss_terms.py',
        'tests/algos/test_batch_pearl.py',
    ),
    (
        'sac-init: conditions on the variance',
        'mtrl/stages/sac_init.py',
        'z, _ = policy.algo.posterior(context)',
        '_, z = policy.algo.posterior(context)',
        'tests/stages/test_sac_init_conditioning.py',
        '',
    ),
    (
        'sac-init: z from all rows collected',
        'mtrl/stages/sac_init.py',
        'context = np.concatenate(rows)[: cfg.rollout_steps]',
        'context = np.concatenate(rows)',
        'tests/stages/test_sac_init_conditioning.py',
        '',
    ),
    (
        'writer: complete=True from the start',
        'mtrl/artifacts/store.py',
        '        attrs[COMPLETE_ATTR] = False\n',
        '        attrs[COMPLETE_ATTR] = True\n',
        'tests/foundation/test_writer_and_checkpoints.py',
        'tests/foundation/test_artifacts.py',
    ),
    (
        'checkpoint of another config resumed',
        'mtrl/pipeline/base.py',
        '                if art.fingerprint != self.meta.fingerprint:\n                    return None\n',
        '',
        'tests/foundation/test_writer_and_checkpoints.py',
        'tests/foundation/test_artifacts.py',
    ),
    (
        'sector goals: radius without sqrt',
        'mtrl/envs/sampling.py',
        'max_radius * np.sqrt(rng.uniform(0.0, 1.0, size=n))',
        'max_radius * rng.uniform(0.0, 1.0, size=n)',
        'tests/envs/test_task_sampling.py',
        'tests/envs/test_registry.py',
    ),
    (
        'Alg. 4: own rows eligible for c~_i',
        'mtrl/algos/mbml.py',
        'eligible = (confident & ~torch.eye(',
        'eligible = (confident | ~torch.eye(',
        'tests/envs/test_task_sampling.py',
        'tests/algos/test_mbml.py',
    ),
]


def run(tests: str) -> bool:
    """True when the tests fail (the bug is caught)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-p", "no:cacheprovider", tests]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True).returncode != 0


def main() -> int:
    column = 5 if "--old" in sys.argv else 4
    missed = 0
    for bug in BUGS:
        name, path, original, planted, tests = bug[0], ROOT / bug[1], bug[2], bug[3], bug[column]
        if not tests:
            print(f"{name:48s} | (no older test)")
            continue
        source = path.read_text()
        if source.count(original) != 1:
            print(f"{name:48s} | cannot plant: the original text is not in {bug[1]} exactly once")
            missed += 1
            continue
        try:
            path.write_text(source.replace(original, planted))
            caught = run(tests)
        finally:
            path.write_text(source)
        missed += not caught
        print(f"{name:48s} | {Path(tests).name}: {'caught' if caught else 'MISSED'}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
