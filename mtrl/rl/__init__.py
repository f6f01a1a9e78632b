"""RL code the stages share: the online SAC loop, the one episode runner, the evaluation protocol (Alg. 5),
the policy interface and its adapters, the task-inference probe, the multi-task training loop and its batches."""
