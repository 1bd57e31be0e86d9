"""Bayesian optimisation over log(LR): convergence, no repeats, seeding, divergence scores."""

import math

import pytest

from autolrs.engine.bo import LRSearch, Observation, SearchSpace, scores_for_gp

OPTIMUM = 0.05


def objective(lr: float) -> float:
    return (math.log10(lr) - math.log10(OPTIMUM)) ** 2 + 0.3


def run_search(space: SearchSpace, seed: int, trials: int = 10) -> list[Observation]:
    search = LRSearch(space, seed=seed, stage=0)
    observations: list[Observation] = []
    for _ in range(trials):
        lr = search.propose(observations, reference_loss=2.0)
        observations.append(Observation(lr, objective(lr)))
    return observations


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lands_near_the_optimum_within_k_evaluations(seed):
    observations = run_search(SearchSpace(1e-4, 1.0, kappa=1.96), seed)
    best = min(observations, key=lambda o: o.score)
    assert abs(math.log10(best.lr) - math.log10(OPTIMUM)) < 0.25  # within a factor 1.8


@pytest.mark.parametrize("kappa, acq", [(1.96, "sampling"), (1e6, "lbfgs")])
def test_never_reproposes_a_tried_lr(kappa, acq):
    observations = run_search(SearchSpace(1e-3, 1.0, kappa=kappa, acq_optimizer=acq), seed=3, trials=12)
    logs = sorted(math.log10(o.lr) for o in observations)
    assert all(b - a >= 1e-3 for a, b in zip(logs, logs[1:]))
    assert all(1e-3 <= o.lr <= 1.0 for o in observations)


def test_same_seed_same_proposals_and_other_seed_differs():
    space = SearchSpace(1e-3, 1.0, kappa=1.96)
    a = [o.lr for o in run_search(space, seed=7, trials=5)]
    b = [o.lr for o in run_search(space, seed=7, trials=5)]
    c = [o.lr for o in run_search(space, seed=8, trials=5)]
    assert a == b
    assert a != c


def test_diverged_trials_get_a_penalty_above_the_worst_loss():
    space = SearchSpace(1e-3, 1.0, kappa=1.96)
    obs = [Observation(0.01, 1.0), Observation(0.1, 0.5), Observation(1.0, None)]
    scores = scores_for_gp(obs, space, reference_loss=2.0)
    assert scores[:2] == [1.0, 0.5]
    assert 2.0 < scores[2] < 10.0
    paper = SearchSpace(1e-3, 1.0, kappa=1e6, divergence_score=1e6)
    assert scores_for_gp(obs, paper)[2] == 1e6


def test_lower_bound_is_below_best_score():
    space = SearchSpace(1e-4, 1.0, kappa=1.96)
    observations = run_search(space, seed=0, trials=6)
    bound, where = LRSearch(space, 0, 0).lower_bound(observations, kappa=2.0)
    assert bound <= min(o.score for o in observations) + 1e-6
    assert 1e-4 <= where <= 1.0


def test_prior_observations_are_used_but_may_be_retried():
    space = SearchSpace(1e-3, 1.0, kappa=1.96)
    prior = [Observation(lr, objective(lr), prior=True) for lr in (0.002, 0.02, 0.2, 0.9)]
    lr = LRSearch(space, seed=0, stage=1).propose(prior + [Observation(0.05, objective(0.05))])
    assert 1e-3 <= lr <= 1.0
    assert abs(math.log10(lr) - math.log10(0.05)) >= 1e-3
