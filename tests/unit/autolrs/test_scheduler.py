"""The AutoLRS torch wrapper: LR groups, restores, state_dict round trips, real training."""

import copy
import json

import pytest
import torch
from torch import nn

from autolrs import AutoLRS, AutoLRSConfig
from autolrs.stores.file import FileStore
from autolrs.tasks.digits import digits_task
from autolrs.tasks.loop import train


def small_config(**overrides):
    base = dict(min_lr=1e-3, max_lr=0.5, tau=20, tau_max=40, trial_fraction=0.25,
                trials_per_stage=3, max_steps=150, seed=0)
    base.update(overrides)
    return AutoLRSConfig(**base)


def regression_setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    return model, torch.Generator().manual_seed(seed)


def loss_for(model, gen):
    x = torch.randn(32, 4, generator=gen)
    y = x.sum(dim=1, keepdim=True)
    return nn.functional.mse_loss(model(x), y)


class RankZero:
    """The coordinator of rank 0 in a group of ``world_size`` processes, without the
    processes: its own loss is the mean, and it counts the broadcasts it would send."""

    is_main = True

    def __init__(self, world_size):
        self.world_size = world_size
        self.broadcasts = 0

    def mean_over_ranks(self, value):
        return value

    def broadcast_object(self, obj, src=0):
        self.broadcasts += 1
        return obj


def run(sched, model, optimizer, gen, steps=None):
    lrs = []
    while not sched.done and (steps is None or sched.steps < steps):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        loss = loss_for(model, gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sched.step(loss)
    return lrs


def test_param_groups_keep_their_ratio_to_the_first_group():
    model, gen = regression_setup()
    optimizer = torch.optim.SGD([
        {"params": model[0].parameters(), "lr": 0.1},
        {"params": model[2].parameters(), "lr": 0.01},
    ], momentum=0.9)
    sched = AutoLRS(model, optimizer, small_config())
    lrs = run(sched, model, optimizer, gen)
    assert len({round(a, 12) for a, _ in lrs}) > 3  # AutoLRS moved the LR
    for first, second in lrs:
        assert second == pytest.approx(first * 0.1)


def test_a_frozen_group_stays_frozen_and_a_frozen_first_group_is_refused():
    model, gen = regression_setup()
    optimizer = torch.optim.SGD([
        {"params": model[0].parameters(), "lr": 0.1},
        {"params": model[2].parameters(), "lr": 0.0},
    ])
    sched = AutoLRS(model, optimizer, small_config(max_steps=60))
    lrs = run(sched, model, optimizer, gen)
    assert {second for _, second in lrs} == {0.0} and len({first for first, _ in lrs}) > 3
    backwards = torch.optim.SGD([
        {"params": model[0].parameters(), "lr": 0.0},
        {"params": model[2].parameters(), "lr": 0.5},
    ])
    with pytest.raises(ValueError, match="first param group has lr 0.0; AutoLRS sets"):
        AutoLRS(model, backwards, small_config())


def test_first_step_already_uses_autolrs_lr_and_restores_set_the_lr():
    model, gen = regression_setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=123.0, momentum=0.9)
    sched = AutoLRS(model, optimizer, small_config(preset="paper"))
    assert optimizer.param_groups[0]["lr"] == sched.lr != 123.0
    lrs = run(sched, model, optimizer, gen)
    trials = [t for h in sched.history for t in h["trials"]]
    # Every trial's LR is the LR of each of its steps: no step at a stale LR after a restore.
    position = 0
    for stage in sched.history:
        for trial in stage["trials"]:
            steps = lrs[trial["start_step"]:trial["start_step"] + trial["steps"]]
            assert all(lr[0] == trial["lr"] for lr in steps)
    assert trials and position == 0


def test_state_dict_round_trip_continues_exactly():
    def fresh():
        model, gen = regression_setup(seed=3)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        return model, gen, optimizer

    model, gen, optimizer = fresh()
    sched = AutoLRS(model, optimizer, small_config(max_steps=120))
    reference_lrs = run(sched, model, optimizer, gen)
    reference_history = sched.history

    model, gen, optimizer = fresh()
    sched = AutoLRS(model, optimizer, small_config(max_steps=120))
    first_lrs = run(sched, model, optimizer, gen, steps=37)  # mid-search
    saved = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "autolrs": sched.state_dict(), "gen": gen.get_state()})
    model2, _, optimizer2 = fresh()
    model2.load_state_dict(saved["model"])
    optimizer2.load_state_dict(saved["optimizer"])
    sched2 = AutoLRS(model2, optimizer2, small_config(max_steps=120))
    sched2.load_state_dict(saved["autolrs"])
    gen2 = torch.Generator()
    gen2.set_state(saved["gen"])
    rest = run(sched2, model2, optimizer2, gen2)
    assert first_lrs + rest == reference_lrs
    assert sched2.history == reference_history
    json.dumps(sched2.state_dict()["controller"], allow_nan=False)


def test_config_from_environment(monkeypatch):
    model, _ = regression_setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monkeypatch.setenv("AUTOLRS_CONFIG", json.dumps({"minLR": 0.01, "maxLR": 0.2, "tau": 50}))
    sched = AutoLRS(model, optimizer)
    assert (sched.config.min_lr, sched.config.max_lr, sched.config.tau) == (0.01, 0.2, 50)
    monkeypatch.setenv("AUTOLRS_CONFIG", json.dumps({"minLR": 0.5, "maxLR": 0.2}))
    with pytest.raises(ValueError, match="min_lr must be > 0 and < max_lr"):
        AutoLRS(model, optimizer)


def test_store_receives_decisions_state_and_heartbeat(tmp_path):
    model, gen = regression_setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    store = FileStore(tmp_path)
    sched = AutoLRS(model, optimizer, small_config(), store=store)
    run(sched, model, optimizer, gen)
    decisions = store.decisions()
    # One decision per stage, and one more for each rollback to the next-best LR.
    rollbacks = sum(len(h["rollbacks"]) for h in sched.history)
    assert [d["type"] for d in decisions].count("decision") == len(sched.history) + rollbacks
    assert [d["type"] for d in decisions].count("rollback") == rollbacks
    version, state = store.load_state()
    assert version > 0 and state["steps"] == sched.steps
    beat = store.read_heartbeat()
    assert beat["step"] == sched.steps and beat["phase"] == "done"


def test_autolrs_beats_a_badly_chosen_constant_lr_on_digits():
    torch.set_num_threads(1)
    task = digits_task(seed=0)
    steps = 500

    model = task.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    sched = AutoLRS(model, optimizer, AutoLRSConfig(min_lr=1e-3, max_lr=0.3, tau=100,
                                                    tau_max=200, max_steps=steps, seed=0))
    train(task, model, optimizer, steps, after_step=lambda s, l: (sched.step(l), sched.done)[1],
          eval_every=steps)
    autolrs_loss, autolrs_acc = task.evaluate(model)

    bad = task.make_model()
    bad_optimizer = torch.optim.SGD(bad.parameters(), lr=1e-4, momentum=0.9)  # too small
    train(task, bad, bad_optimizer, steps, eval_every=steps)
    bad_loss, bad_acc = task.evaluate(bad)
    assert autolrs_loss < bad_loss * 0.5
    assert autolrs_acc > bad_acc


@pytest.mark.parametrize("exact", [True, False], ids=["exact-replay", "replay-differs"])
def test_resume_after_crash_logs_each_decision_once(tmp_path, exact):
    """An exact replay (data seeded by the step) appends nothing twice; one whose data
    differs after the checkpoint voids the lost run's entries, and the effective log
    matches the history."""
    from autolrs.checkpoint import CheckpointManager
    from autolrs.decision_log import SUPERSEDED, effective
    from autolrs.runtime import Runtime

    def session(steps=None):
        model, gen = regression_setup(seed=4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        runtime = Runtime(checkpoints=CheckpointManager(tmp_path / "ckpt"), checkpoint_every=25)
        sched = AutoLRS(model, optimizer, small_config(max_steps=150),
                        store=FileStore(tmp_path / "store"), runtime=runtime)
        gen.manual_seed(1000 + sched.steps)  # the data continues from the resumed step
        while not sched.done and (steps is None or sched.steps < steps):
            if exact:
                gen.manual_seed(1000 + sched.steps)  # each batch fixed by its step
            loss = loss_for(model, gen)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sched.step(loss)
        sched.checkpoints.wait()
        return sched

    crashed = session(steps=65)        # last checkpoint at 50; decisions at 59; "crash" at 65
    logged_before = FileStore(tmp_path / "store").decisions()
    assert any(d["step"] > 50 for d in logged_before)  # decisions after the last checkpoint
    resumed = session()
    assert resumed.done and crashed.steps == 65
    stream = FileStore(tmp_path / "store").decisions()
    markers = [d for d in stream if d["type"] == SUPERSEDED]
    assert len(markers) == (0 if exact else 1)
    log = effective(stream)
    ids = [d["id"] for d in log]
    assert len(ids) == len(set(ids))
    steps = [int(i.split("@")[1]) for i in ids]
    assert steps == sorted(steps)
    scores = [d["score"] for d in log if d["type"] == "trial_end"]
    assert scores == [t["score"] for h in resumed.history for t in h["trials"]]


def test_lr_scaling_rescales_the_interval_with_the_global_batch():
    model, _ = regression_setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = small_config(min_lr=0.01, max_lr=0.1, lr_scaling="sqrt", reference_batch_size=32)
    sched = AutoLRS(model, optimizer, cfg, coordinator=RankZero(4), batch_size=32)
    assert (sched.config.min_lr, sched.config.max_lr) == pytest.approx((0.02, 0.2))
    assert 0.02 <= sched.lr <= 0.2
    with pytest.raises(ValueError, match="lr_scaling needs AutoLRS"):
        AutoLRS(model, optimizer, cfg, coordinator=RankZero(4))
    for bad in (0, -4, "32", True):
        with pytest.raises(ValueError, match="AutoLRS batch_size must be an integer >= 1"):
            AutoLRS(model, optimizer, cfg, coordinator=RankZero(4), batch_size=bad)


def test_lr_scaling_follows_a_world_size_change_on_resume():
    cfg = small_config(min_lr=0.01, max_lr=0.1, lr_scaling="linear", reference_batch_size=32)
    model, gen = regression_setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = AutoLRS(model, optimizer, cfg, coordinator=RankZero(4), batch_size=32)
    run(sched, model, optimizer, gen, steps=30)
    saved = sched.state_dict()
    lr_before = sched.lr

    model2, _ = regression_setup()
    optimizer2 = torch.optim.SGD(model2.parameters(), lr=0.1)
    resumed = AutoLRS(model2, optimizer2, cfg, coordinator=RankZero(2), batch_size=32)
    resumed.load_state_dict(saved)
    assert (resumed.config.min_lr, resumed.config.max_lr) == pytest.approx((0.02, 0.2))
    assert resumed.lr == pytest.approx(lr_before / 2)
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(lr_before / 2)
    assert all(0.02 <= o["lr"] <= 0.2 for o in resumed.controller.s["observations"])


def test_resuming_under_another_config_is_refused_naming_the_fields(tmp_path):
    from autolrs.checkpoint import CheckpointManager
    from autolrs.runtime import Runtime

    def session(config, steps=None):
        model, gen = regression_setup(seed=4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        runtime = Runtime(checkpoints=CheckpointManager(tmp_path / "ckpt"), checkpoint_every=25)
        sched = AutoLRS(model, optimizer, config, runtime=runtime)
        run(sched, model, optimizer, gen, steps=steps)
        sched.checkpoints.wait()
        return model

    session(small_config(max_steps=150), steps=60)       # checkpoints at 25 and 50
    with pytest.raises(ValueError) as caught:
        session(small_config(max_steps=300, tau=30))
    message = str(caught.value)
    assert message.startswith(f"cannot resume from the checkpoint of step 50 in {tmp_path / 'ckpt'}: "
                              "the AutoLRS state was saved with another config: ")
    assert "tau 20 (given 30)" in message and "max_steps 150 (given 300)" in message
    assert "\n" not in message
    assert session(small_config(max_steps=150)) is not None  # the same config resumes


def test_load_state_dict_refuses_what_is_not_an_autolrs_state():
    model, _ = regression_setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = AutoLRS(model, optimizer, small_config())
    for bad, shown in ((None, "'NoneType'"), ({}, "None"), ({"format": 99}, "99")):
        with pytest.raises(ValueError, match=f"unsupported AutoLRS state format {shown}"):
            sched.load_state_dict(bad)
    with pytest.raises(ValueError, match="the AutoLRS state lacks controller, snapshots, lr_ratios, started"):
        sched.load_state_dict({"format": sched.state_dict()["format"]})


def test_close_still_closes_the_runtime_when_the_last_checkpoint_write_failed(tmp_path):
    import shutil

    from autolrs.checkpoint import CheckpointError, CheckpointManager
    from autolrs.runtime import Runtime

    class Opened:
        closed = False

        def close(self):
            self.closed = True

    model, gen = regression_setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    opened = Opened()
    runtime = Runtime(checkpoints=CheckpointManager(tmp_path / "ckpt"), checkpoint_every=1000,
                      owned=[opened])
    sched = AutoLRS(model, optimizer, small_config(max_steps=30), runtime=runtime)
    run(sched, model, optimizer, gen, steps=10)
    shutil.rmtree(tmp_path / "ckpt")
    (tmp_path / "ckpt").write_text("not a folder any more")   # the volume went away
    sched.save_checkpoint()
    with pytest.raises(CheckpointError, match="checkpoint of step 10 to .* failed"):
        sched.close()
    assert opened.closed


def test_a_restart_without_a_checkpoint_does_not_log_its_replay_twice(tmp_path):
    """A pod that dies before its first checkpoint starts over from step 0 against the
    same store: the exact replay of what it had logged is not appended again."""
    def session(steps=None):
        model, gen = regression_setup(seed=4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched = AutoLRS(model, optimizer, small_config(max_steps=150),
                        store=FileStore(tmp_path / "store"))
        run(sched, model, optimizer, gen, steps=steps)
        return sched

    session(steps=65)
    lost = FileStore(tmp_path / "store").decisions()
    assert lost
    finished = session()
    stream = FileStore(tmp_path / "store").decisions()
    assert stream[:len(lost)] == lost and all(d["type"] != "superseded" for d in stream)
    ids = [d["id"] for d in stream]
    assert len(ids) == len(set(ids)) and stream[-1]["type"] == "done"
    assert [d["score"] for d in stream if d["type"] == "trial_end"] == \
        [t["score"] for h in finished.history for t in h["trials"]]


def test_the_quiet_step_shortcut_of_one_process_changes_nothing(tmp_path):
    """A run of one process skips broadcasting and publishing on steps that change nothing
    but the LR; rank 0 of a group, which always broadcasts, must make the same run."""
    runs, group = [], RankZero(2)
    for name, coordinator in (("alone", None), ("group", group)):
        model, gen = regression_setup()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched = AutoLRS(model, optimizer, small_config(max_steps=200),
                        store=FileStore(tmp_path / name), coordinator=coordinator)
        full_runs = []
        real_run = sched._run
        sched._run = lambda actions, **kw: (full_runs.append(actions), real_run(actions, **kw))
        lrs = run(sched, model, optimizer, gen)
        runs.append((lrs, sched.history, FileStore(tmp_path / name).decisions(),
                     [p.detach().clone() for p in model.parameters()], len(full_runs)))
    (lrs, history, log, params, full), (lrs2, history2, log2, params2, full2) = runs
    assert len(lrs) == 200 and lrs == lrs2
    assert history == history2 and log == log2 and len(log) > 5
    assert all(torch.equal(a, b) for a, b in zip(params, params2))
    assert full2 == 200 and group.broadcasts >= 200  # the group path on every step
    assert full < 100  # one process: only steps with actions or events take the full path
    # the cooldown changes the LR on quiet steps too, and the shortcut applies it
    assert len({round(lr[0], 12) for lr in lrs[-30:]}) > 20
