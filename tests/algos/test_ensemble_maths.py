"""The regression ensemble's arithmetic pinned directly (issue 23): standardisation, each member's error and
prediction written out member by member, the members' mean and population std, the held-out split and the
mini-batch stream of `fit` replayed from the task's generator, member and task independence of a step, the
checkpoint layout, and Alg. 3's strict threshold and chunking. Tiny networks: the whole file takes seconds."""

import dataclasses

import numpy as np
import pytest
import torch

import mtrl.algos.ensemble as ensemble_module
from mtrl.algos.ensemble import MIN_STD, EnsembleConfig, EnsembleRegressor, relabel_with_ensemble, row_std

CFG = EnsembleConfig(members=3, hidden=(8,), lr=1e-2, batch_size=16, steps=10, holdout_fraction=0.2)


def make(tasks=1, in_dim=4, out_dim=2, seeds=None, **changes):
    cfg = dataclasses.replace(CFG, **changes)
    return EnsembleRegressor(cfg, in_dim, out_dim, "cpu", tasks=tasks, seeds=seeds or list(range(7, 7 + tasks)))


def data(seed, n, in_dim=4, out_dim=2):
    """Inputs far from standard (offset, scaled columns) and targets that depend on them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_dim, generator=g) * torch.arange(1.0, in_dim + 1) + 3.0 * (seed + 1)
    y = x[:, :out_dim] * 0.5 + torch.randn(n, out_dim, generator=g) + seed
    return x, y


def member_output(ensemble, index, x):
    """Member `index` of the flat [tasks · members] network on standardised rows x [N, in], layer by layer."""
    layers = ensemble.model.net.layers
    for i, layer in enumerate(layers):
        x = x @ layer.weight[index] + layer.bias[index]
        if i < len(layers) - 1:
            x = x.relu()
    return x


def constant_members(ensemble, values):
    """Every weight 0 and member m's output bias values[m]: member m predicts values[m] (standardised units)."""
    with torch.no_grad():
        for layer in ensemble.model.net.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        ensemble.model.net.layers[-1].bias.copy_(torch.as_tensor(values, dtype=torch.float32).view(-1, 1, 1))


def test_defaults_are_table_3():
    """MBML Table 3: 20 members, Adam at 3e-4, batches of 128; rewards 1 × 128 hidden, next states 6 × 256 (and
    they predict the difference, `predict_delta`)."""
    from mtrl.config import Config

    rewards, dynamics = Config().rewards, Config().dynamics
    assert (rewards.members, rewards.lr, rewards.batch_size, rewards.hidden) == (20, 3e-4, 128, (128,))
    assert (dynamics.members, dynamics.lr, dynamics.batch_size, dynamics.hidden) == (20, 3e-4, 128, (256,) * 6)
    assert dynamics.predict_delta and not rewards.predict_delta


# ---------------------------------------------------------------- standardisation
@pytest.mark.parametrize("predict_delta", [False, True])
def test_statistics_are_each_tasks_mean_and_sample_std_with_a_floor(predict_delta):
    """Inputs and targets (target − s for next-state ensembles) are standardised with the task's own mean and
    sample std (ddof 1); a constant column gets the floor MIN_STD instead of 0."""
    ensemble = make(tasks=2, predict_delta=predict_delta)
    (x0, y0), (x1, y1) = data(0, 30), data(1, 20)
    x1[:, 2] = 5.0  # a constant input column
    ensemble.set_normalizer([x0, x1], [y0, y1])
    model = ensemble.model
    for t, (x, y) in enumerate([(x0, y0), (x1, y1)]):
        raw = y - x[:, :2] if predict_delta else y
        torch.testing.assert_close(model.input_mean[t], x.mean(0))
        torch.testing.assert_close(model.target_mean[t], raw.mean(0))
        torch.testing.assert_close(model.target_std[t], raw.std(0))
        expected_std = x.std(0)
        if t == 1:
            expected_std[2] = MIN_STD
        torch.testing.assert_close(model.input_std[t], expected_std)


def test_a_fresh_model_does_not_standardise():
    """Before `set_normalizer` the statistics are the identity (mean 0, std 1): a member predicts its raw
    network output."""
    ensemble = make()
    x = data(0, 5)[0]
    members = ensemble.model(x).detach()
    for m in range(3):
        torch.testing.assert_close(members[0, m], member_output(ensemble, m, x).detach())


@pytest.mark.parametrize("predict_delta", [False, True])
def test_each_members_error_and_prediction_by_hand(predict_delta):
    """Member m of task t: error ((f_m((x − μ_x,t)/σ_x,t) − (y' − μ_y,t)/σ_y,t))² with y' = y (or y − s), and
    prediction f_m(·)·σ_y,t + μ_y,t (+ s): in the task's own statistics, task t's members being block t."""
    ensemble = make(tasks=2, predict_delta=predict_delta)
    (x0, y0), (x1, y1) = data(0, 30), data(1, 30)
    ensemble.set_normalizer([x0, x1], [y0, y1])
    model = ensemble.model
    x, y = torch.stack([x0, x1]), torch.stack([y0, y1])
    error = model.standardized_error(x, y).detach()
    predictions = model(x).detach()
    assert error.shape == predictions.shape == (2, 3, 30, 2)
    for t in range(2):
        standardized = (x[t] - model.input_mean[t]) / model.input_std[t]
        raw = y[t] - x[t, :, :2] if predict_delta else y[t]
        target = (raw - model.target_mean[t]) / model.target_std[t]
        for m in range(3):
            out = member_output(ensemble, 3 * t + m, standardized).detach()
            torch.testing.assert_close(error[t, m], (out - target) ** 2)
            expected = out * model.target_std[t] + model.target_mean[t] + (x[t, :, :2] if predict_delta else 0)
            torch.testing.assert_close(predictions[t, m], expected)
    # rows given once [N, in] are every task's rows
    torch.testing.assert_close(model(x0).detach()[1], model(torch.stack([x0, x0])).detach()[1])


def test_inputs_of_the_wrong_shape_or_count_are_refused():
    ensemble = make(tasks=2)
    x, y = data(0, 6)
    for bad in (x[None].expand(3, -1, -1), x[None, None].expand(2, 1, -1, -1), x[0]):
        with pytest.raises(ValueError, match=r"expected inputs \[N, 4\] or \[2, N, 4\], got"):
            ensemble.model(bad)
    with pytest.raises(ValueError, match="2 task.s. need as many input and target tensors, got 1 and 2"):
        ensemble.set_normalizer([x], [y, y])
    with pytest.raises(ValueError, match="got 2 and 1"):
        ensemble.set_normalizer([x, x], [y])
    with pytest.raises(ValueError, match="predict_delta needs inputs that start with the state"):
        make(in_dim=2, out_dim=3, predict_delta=True)
    make(in_dim=3, out_dim=3, predict_delta=True)  # the state alone as input is allowed
    make(in_dim=2, out_dim=3)  # a wide target without predict_delta too


# ---------------------------------------------------------------- mean and std over members
def test_prediction_is_the_members_mean_and_population_std_in_original_units():
    """Members that predict 1, 2 and 4 (standardised), target statistics μ = 10, σ = 2: 12, 14 and 18, whose
    mean is 44/3 and population std (ddof 0) √(56/9)."""
    ensemble = make(in_dim=2, out_dim=1)
    constant_members(ensemble, [1.0, 2.0, 4.0])
    ensemble.model.target_mean.fill_(10.0)
    ensemble.model.target_std.fill_(2.0)
    mean, std = ensemble.predict(torch.randn(5, 2))
    assert mean.shape == std.shape == (1, 5, 1)
    torch.testing.assert_close(mean, torch.full((1, 5, 1), 44 / 3))
    torch.testing.assert_close(std, torch.full((1, 5, 1), (56 / 9) ** 0.5))


def test_evaluate_is_the_mse_of_the_mean_and_the_average_members_mse():
    """Members predicting 12, 14, 18 against targets 14 and 16: the mean's MSE is ((2/3)² + (4/3)²)/2 = 10/9,
    the members' ((4 + 0 + 16)/3 + (16 + 4 + 4)/3)/2 = 22/3; chunks do not matter; a task without rows gets {}."""
    ensemble = make(tasks=2, in_dim=2, out_dim=1)
    constant_members(ensemble, [1.0, 2.0, 4.0, 0.0, 0.0, 0.0])
    ensemble.model.target_mean.fill_(10.0)
    ensemble.model.target_std.fill_(2.0)
    x, y = torch.zeros(2, 2), torch.tensor([14.0, 16.0])
    for chunk in (1, 8192):
        first, empty = ensemble.evaluate([x, x[:0]], [y, y[:0]], chunk_size=chunk)
        assert first["mse"] == pytest.approx(10 / 9, rel=1e-6)
        assert first["member_mse"] == pytest.approx(22 / 3, rel=1e-6)
        assert empty == {}


# ---------------------------------------------------------------- one step: per member, per task
def test_update_reports_the_members_mean_and_worst_loss_before_the_step():
    ensemble = make(tasks=2)
    (x0, y0), (x1, y1) = data(0, 16), data(1, 16)
    ensemble.set_normalizer([x0, x1], [y0, y1])
    x, y = torch.stack([x0, x1]), torch.stack([y0, y1])
    per_member = ensemble.model.standardized_error(x, y).detach().mean((2, 3))  # [tasks, members]
    before = ensemble.model.net.layers[0].weight.detach().clone()
    metrics = ensemble.update(x, y)
    assert metrics.keys() == {"loss", "loss_max"} and metrics["loss"].shape == (2,)
    torch.testing.assert_close(metrics["loss"], per_member.mean(1))
    torch.testing.assert_close(metrics["loss_max"], per_member.amax(1))
    assert not torch.equal(ensemble.model.net.layers[0].weight, before)  # and a step was taken
    assert ensemble.optimizer.state_dict()["state"][0]["step"].item() == 1
    # the next step's gradient is that of its own batch's summed losses, nothing carried over from the last
    (x2, y2), (x3, y3) = data(2, 16), data(3, 16)
    x, y = torch.stack([x2, x3]), torch.stack([y2, y3])
    params = list(ensemble.model.parameters())
    expected = torch.autograd.grad(ensemble.model.standardized_error(x, y).mean((2, 3)).sum(), params)
    ensemble.update(x, y)
    for p, g in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_scalar_targets_may_come_without_their_axis():
    one = make(in_dim=2, out_dim=1)
    two = make(in_dim=2, out_dim=1)
    x, y = data(0, 16, in_dim=2, out_dim=1)
    one.set_normalizer(x, y[:, 0])
    two.set_normalizer(x, y)
    a, b = one.update(x[None], y[None, :, 0]), two.update(x[None], y[None])
    assert torch.equal(a["loss"], b["loss"])
    assert torch.equal(one.model.net.layers[0].weight, two.model.net.layers[0].weight)


def test_a_members_gradient_comes_from_its_own_error_only():
    """Members differ only by initialisation and never share a gradient: the loss of member 1 of task 0 has a
    gradient in its own weights and none in any other member's or task's."""
    ensemble = make(tasks=2)
    x, y = data(0, 16)
    ensemble.set_normalizer([x, x], [y, y])
    error = ensemble.model.standardized_error(torch.stack([x, x]), torch.stack([y, y]))
    error.mean((2, 3))[0, 1].backward()
    for layer in ensemble.model.net.layers:
        for grad in (layer.weight.grad, layer.bias.grad):
            assert grad[1].abs().sum() > 0
            assert all(grad[i].abs().sum() == 0 for i in range(6) if i != 1)


def test_a_step_moves_a_member_by_its_own_error_and_a_task_by_its_own_batch():
    """Two copies take one step on the same batches, except that in the second member 2 of task 0 starts
    elsewhere and task 1 gets other rows: every other member of task 0 ends bit for bit where it did in the
    first copy (weights and Adam moments), and so would a task 0 that shared no batch with task 1."""
    a, b = make(tasks=2), make(tasks=2)
    (x0, y0), (x1, y1), (x2, y2) = data(0, 16), data(1, 16), data(2, 16)
    for e in (a, b):
        e.set_normalizer([x0, x1], [y0, y1])
    with torch.no_grad():
        for layer in b.model.net.layers:
            layer.weight[2].mul_(-3.0)
    a.update(torch.stack([x0, x1]), torch.stack([y0, y1]))
    b.update(torch.stack([x0, x2]), torch.stack([y0, y2]))
    state_a, state_b = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for p, (layer_a, layer_b) in enumerate(zip(a.model.net.layers, b.model.net.layers, strict=True)):
        for name in ("weight", "bias"):
            ta, tb = getattr(layer_a, name), getattr(layer_b, name)
            assert torch.equal(ta[:2], tb[:2])  # task 0's members 0 and 1
            assert not torch.equal(ta[2], tb[2]) and not torch.equal(ta[3:], tb[3:])
        for i in (2 * p, 2 * p + 1):
            for moment in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(state_a[i][moment][:2], state_b[i][moment][:2])


# ---------------------------------------------------------------- fit: Alg. 2 replayed
@pytest.mark.parametrize("steps", [7, 20])
def test_fit_is_alg_2_replayed_from_each_tasks_generator(monkeypatch, steps):
    """Per task, from its own generator: a permutation whose first ⌊N·holdout⌋ rows are held out, statistics
    from the rest, then `steps` Adam steps on mini-batches drawn uniformly from the training rows (indices drawn
    INDEX_BLOCK steps at a time, here 3: the same stream as step by step). train_loss is the mean of the last
    max(1, steps // 10) losses, the held-out metrics are `evaluate` on the held-out rows. Three tasks of different
    sizes, so each task's rows must be found in the joined data."""
    monkeypatch.setattr(ensemble_module, "INDEX_BLOCK", 3)
    sizes = (23, 41, 30)  # 4, 8 and 6 held-out rows
    task_data = [data(t, n) for t, n in enumerate(sizes)]
    fitted, twin = make(tasks=3, steps=steps), make(tasks=3, steps=steps)
    metrics = fitted.fit([x for x, _ in task_data], [y for _, y in task_data])

    splits = []
    for (x, _), g in zip(task_data, twin.generators, strict=True):
        order = torch.randperm(len(x), generator=g)
        n_holdout = int(len(x) * 0.2)
        splits.append((order[:n_holdout], order[n_holdout:]))
    assert [len(h) for h, _ in splits] == [4, 8, 6]
    twin.set_normalizer([x[tr] for (x, _), (_, tr) in zip(task_data, splits, strict=True)],
                        [y[tr] for (_, y), (_, tr) in zip(task_data, splits, strict=True)])
    losses = []
    for _ in range(steps):
        rows = [train[torch.randint(len(train), (CFG.batch_size,), generator=g)]
                for (_, train), g in zip(splits, twin.generators, strict=True)]
        x = torch.stack([x[r] for (x, _), r in zip(task_data, rows, strict=True)])
        y = torch.stack([y[r] for (_, y), r in zip(task_data, rows, strict=True)])
        losses.append(twin.update(x, y)["loss"])
    losses = torch.stack(losses, 1)  # [tasks, steps]

    mine, theirs = fitted.state_dict(), twin.state_dict()
    for key in mine["model"]:
        assert torch.equal(mine["model"][key], theirs["model"][key]), key
    assert torch.equal(mine["generators"], theirs["generators"])  # the same draws, no more
    assert mine["optimizer"]["state"][0]["step"].item() == steps
    tail = max(1, steps // 10)
    held = twin.evaluate([x[h] for (x, _), (h, _) in zip(task_data, splits, strict=True)],
                         [y[h] for (_, y), (h, _) in zip(task_data, splits, strict=True)])
    for t in range(3):
        assert metrics[t]["train_loss"] == pytest.approx(losses[t, -tail:].mean().item(), rel=1e-6)
        assert metrics[t] == {"train_loss": metrics[t]["train_loss"], "holdout_mse": held[t]["mse"],
                              "holdout_member_mse": held[t]["member_mse"]}


def test_fit_without_held_out_rows_reports_only_the_training_loss():
    """⌊N·fraction⌋ = 0 rows held out: no held-out metrics for that task (a 5-row task at 10 %), while a 30-row
    task in the same model still gets them; at fraction 0 the statistics come from all rows."""
    (x0, y0), (x1, y1) = data(0, 5), data(1, 30)
    mixed = make(tasks=2, holdout_fraction=0.1, steps=2).fit([x0, x1], [y0, y1])
    assert mixed[0].keys() == {"train_loss"}
    assert mixed[1].keys() == {"train_loss", "holdout_mse", "holdout_member_mse"}
    ensemble = make(holdout_fraction=0.0, steps=2)
    (only,) = ensemble.fit(x1, y1)
    assert only.keys() == {"train_loss"}
    torch.testing.assert_close(ensemble.model.input_mean[0], x1.mean(0))


# ---------------------------------------------------------------- checkpoints
def test_checkpoints_store_member_tensors_task_major_and_load_back_exactly():
    """[tasks · members, a, b] network tensors and Adam moments are stored as [tasks, members, a, b] (member m of
    task t at [t, m]); buffers [tasks, dim] and Adam's step count as they are; loading restores the flat layout."""
    ensemble = make(tasks=2)
    (x0, y0), (x1, y1) = data(0, 16), data(1, 16)
    ensemble.set_normalizer([x0, x1], [y0, y1])
    ensemble.update(torch.stack([x0, x1]), torch.stack([y0, y1]))
    weight = ensemble.model.net.layers[0].weight
    state = ensemble.state_dict()
    stored = state["model"]["net.layers.0.weight"]
    assert stored.shape == (2, 3, 4, 8) and torch.equal(stored[1, 2], weight[5])
    assert state["model"]["net.layers.1.bias"].shape == (2, 3, 1, 2)
    assert state["model"]["input_std"].shape == (2, 4)
    moments = state["optimizer"]["state"][0]
    assert moments["exp_avg"].shape == (2, 3, 4, 8) and moments["step"].ndim == 0
    policy = ensemble.policy_state_dict()
    assert policy["model"]["net.layers.0.weight"].shape == (2, 3, 4, 8) and policy["tasks"] == 2

    restored = make(tasks=2, seeds=[1, 2])
    restored.load_state_dict(state)
    for key, value in ensemble.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[key], value), key
    assert torch.equal(restored.optimizer.state_dict()["state"][0]["exp_avg"],
                       ensemble.optimizer.state_dict()["state"][0]["exp_avg"])
    acting = make(tasks=2, seeds=[1, 2])
    acting.load_policy_state(policy)
    assert torch.equal(acting.model.net.layers[0].weight, weight)


# ---------------------------------------------------------------- Alg. 3
class _Recorder:
    """Stands in for an ensemble: predicts std = the first input column, mean = the second; records the rows of
    every call."""

    out_dim = 1

    def __init__(self, tasks, device="cpu"):
        self.tasks, self.device, self.calls = tasks, torch.device(device), []

    def predict(self, inputs):
        self.calls.append(len(inputs))
        x = inputs.to("cpu") if inputs.device.type != "meta" else torch.zeros(inputs.shape)
        return x[None, :, 1:2].expand(self.tasks, -1, -1), x[None, :, :1].expand(self.tasks, -1, -1)


def test_relabelling_keeps_a_row_only_strictly_below_the_threshold():
    """Alg. 3 line 3: std < σ_threshold; a std equal to the threshold is not confident. The relabelled value is
    the members' mean, returned as float32 whatever the input's precision."""
    inputs = np.array([[0.25, 7.0], [0.5, 8.0], [0.75, 9.0]])  # float64; std, mean
    mean, std, mask = relabel_with_ensemble(_Recorder(1), inputs, threshold=0.5)
    np.testing.assert_array_equal(mask, [[True, False, False]])
    np.testing.assert_array_equal(mean[0, :, 0], [7.0, 8.0, 9.0])
    np.testing.assert_array_equal(std[0, :, 0], [0.25, 0.5, 0.75])
    assert mean.dtype == std.dtype == np.float32


def test_relabelling_feeds_the_model_float32_rows_whatever_the_inputs_precision():
    ensemble = make(in_dim=3, out_dim=2)
    ensemble.set_normalizer(*data(0, 30, in_dim=3))
    rows = np.random.default_rng(0).normal(size=(5, 3)) * 4  # float64
    mean, std, _ = relabel_with_ensemble(ensemble, (rows[:, :2], rows[:, 2:]), threshold=1.0)
    expected_mean, expected_std = ensemble.predict(torch.as_tensor(rows, dtype=torch.float32))
    np.testing.assert_array_equal(mean, expected_mean.numpy())
    np.testing.assert_array_equal(std, expected_std.numpy())


def test_relabelling_joins_input_parts_column_wise_in_chunks():
    parts = (np.array([[0.1], [0.9], [0.2]], np.float32), np.array([[1.0], [2.0], [3.0]], np.float32))
    recorder = _Recorder(2)
    mean, _, mask = relabel_with_ensemble(recorder, parts, threshold=0.5, chunk_size=2)
    assert recorder.calls == [2, 1]
    np.testing.assert_array_equal(mean[:, :, 0], [[1.0, 2.0, 3.0]] * 2)
    np.testing.assert_array_equal(mask, [[True, False, True]] * 2)


@pytest.mark.parametrize("device, tasks, rows", [("cpu", 1, 256), ("cpu", 2, 128), ("cpu", 8, 64),
                                                 ("meta", 1, 65536), ("meta", 16, 4096), ("meta", 128, 1024)])
def test_default_chunks_are_the_documented_sizes(device, tasks, rows):
    """256 rows on a CPU, 65536 elsewhere (the meta device stands in for a GPU), divided by the number of tasks,
    at least 64 and 1024."""
    recorder = _Recorder(tasks, device)
    relabel_with_ensemble(recorder, np.zeros((rows + 1, 2), np.float32), threshold=1.0)
    assert recorder.calls == [rows, 1]


def test_row_std_is_the_mean_or_max_over_output_dimensions():
    std = np.array([[[0.1, 0.5, 0.3]], [[0.2, 0.2, 0.2]]])  # [tasks 2, N 1, out 3]
    np.testing.assert_allclose(row_std(std, "mean"), [[0.3], [0.2]])
    np.testing.assert_array_equal(row_std(std, "max"), [[0.5], [0.2]])
    with pytest.raises(ValueError, match="statistic must be 'mean' or 'max', got 'median'"):
        row_std(std, "median")
