"""The decision stream across resumes: exact replays append nothing, diverging ones void."""

from __future__ import annotations

from autolrs.decision_log import SUPERSEDED, ReplayLog, effective


def entry(kind: str, step: int, **fields: object) -> dict:
    return {"type": kind, "step": step, **fields, "id": f"{kind}@{step}"}


LOST_RUN = [entry("decision", 50, lr=0.1), entry("trial_end", 120, score=0.29),
            entry("trial_end", 140, score=0.31), entry("decision", 150, lr=0.05)]


def replay(log: ReplayLog, events: list[dict]) -> list[dict]:
    return [out for event in events for out in log.entries_for(event)]


def test_an_exact_replay_appends_only_what_comes_after_the_lost_run() -> None:
    log = ReplayLog(LOST_RUN, after_step=100)
    later = entry("stage_end", 200, lr=0.05)
    assert replay(log, [*LOST_RUN[1:], later]) == [later]


def test_a_replay_that_differs_voids_the_lost_runs_remaining_entries() -> None:
    log = ReplayLog(LOST_RUN, after_step=100)
    new = [entry("trial_end", 120, score=0.29),               # the same: not appended
           entry("trial_end", 130, score=0.25),               # differs from here on
           entry("decision", 150, lr=0.07)]
    appended = replay(log, new)
    marker = appended[0]
    assert marker["type"] == SUPERSEDED and marker["resumed_from"] == 100
    assert marker["ids"] == ["trial_end@140", "decision@150"] and marker["step"] == 130
    assert appended[1:] == new[1:]
    stream = LOST_RUN + appended
    assert effective(stream) == [LOST_RUN[0], new[0], *new[1:]]
    ids = [e["id"] for e in effective(stream)]
    assert len(ids) == len(set(ids))


def test_a_second_resume_reads_the_effective_log_and_marks_uniquely() -> None:
    first = ReplayLog(LOST_RUN, after_step=100)
    stream = LOST_RUN + replay(first, [entry("trial_end", 130, score=0.25), entry("decision", 150, lr=0.07)])
    second = ReplayLog(stream, after_step=100)
    assert [e["id"] for e in second.pending] == ["trial_end@130", "decision@150"]
    appended = replay(second, [entry("trial_end", 125, score=0.2)])
    assert appended[0]["ids"] == ["trial_end@130", "decision@150"]
    markers = [e["id"] for e in stream + appended if e["type"] == SUPERSEDED]
    assert len(markers) == 2 and len(set(markers)) == 2
    assert [e["id"] for e in effective(stream + appended)] == ["decision@50", "trial_end@125"]


def test_without_a_resume_every_event_is_appended() -> None:
    log = ReplayLog()
    assert replay(log, LOST_RUN) == LOST_RUN
