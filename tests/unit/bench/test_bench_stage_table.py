"""The report's AutoLRS stage table: what each kind of stage shows as its chosen LR."""

from bench.report import stage_table


def _result(history):
    return {"seeds": [0], "runs": [{"kind": "autolrs", "seed": 0, "method": "autolrs-default",
                                    "history": history}]}


def _stage(**fields):
    return {"stage": 2, "start_step": 950, "tau": 1450, "trials": [], "search_steps": 0,
            "predicted_loss": None, "actual_loss": 1.5, **fields}


def _row(stage):
    return stage_table(_result([stage])).splitlines()[-1]


def test_a_held_stage_says_it_was_held():
    row = _row(_stage(lr=0.03, no_search="the cooldown follows"))
    assert "| 0.03 (held: the cooldown follows) |" in row


def test_a_held_stage_whose_loss_climbed_shows_the_lr_it_started_with_and_each_halving():
    backoffs = [{"step": 1950, "from_lr": 0.03, "lr": 0.015, "loss": 1.54},
                {"step": 2200, "from_lr": 0.015, "lr": 0.0075, "loss": 1.50}]
    row = _row(_stage(lr=0.0075, no_search="the cooldown follows", backoffs=backoffs))
    assert ("| 0.03 -> 0.0075 (held: the cooldown follows; loss climbing, LR halved at "
            "step 1950, 2200) |") in row


def test_an_empty_backoff_list_reads_as_a_plain_hold():
    assert _row(_stage(lr=0.03, no_search="the cooldown follows", backoffs=[])) == _row(
        _stage(lr=0.03, no_search="the cooldown follows"))
