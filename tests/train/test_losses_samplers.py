"""Loss recipes, enabled choices and samplers: what they emit is what their configuration says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from nas.data import Batch
from nas.train import ChoiceError, Choices, LossRecipe, StepPlan, SubnetTask, create_sampler, distillation
from search_spaces import create_space

SPACE = create_space("ofa_mbv3_tiny")
BATCH = Batch(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), torch.arange(2))


def test_distillation_is_zero_iff_student_equals_teacher_and_has_soft_ce_gradient():
    torch.manual_seed(0)
    t = torch.randn(8, 10)
    assert torch.allclose(distillation(t.clone(), t), torch.zeros(8), atol=1e-6)
    s = torch.randn(8, 10, requires_grad=True)
    assert (distillation(s, t) > 0).all()
    distillation(s, t).mean().backward()
    s2 = s.detach().clone().requires_grad_()
    SoftTargetCrossEntropy()(s2, t.softmax(-1)).backward()
    assert torch.allclose(s.grad, s2.grad, atol=1e-6)


def test_hard_recipe_matches_timm_label_smoothing_and_weights_apply():
    torch.manual_seed(0)
    logits, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    r = LossRecipe(hard=1.0, label_smoothing=0.1)
    assert torch.allclose(r.per_example(logits, y).mean(), LabelSmoothingCrossEntropy(0.1)(logits, y), atol=1e-6)
    both = LossRecipe(hard=1.0, soft=0.5, source="fixed")
    t = torch.randn(16, 10)
    expect = torch.nn.functional.cross_entropy(logits, y, reduction="none") + 0.5 * distillation(logits, t)
    assert torch.allclose(both.per_example(logits, y, t), expect, atol=1e-6)
    with pytest.raises(ValueError, match="no teacher logits"):
        both.per_example(logits, y)
    with pytest.raises(ValueError, match="teacher source"):
        LossRecipe(soft=1.0, source="oracle")


def test_plan_rejects_inplace_distillation_without_an_earlier_teacher():
    student = LossRecipe(hard=0.0, soft=1.0)
    with pytest.raises(ValueError, match="no earlier task"):
        StepPlan([SubnetTask(SPACE.min_arch(), student)])
    StepPlan([SubnetTask(SPACE.max_arch(), LossRecipe(), teacher=True), SubnetTask(SPACE.min_arch(), student)])


def test_sandwich_always_has_max_first_and_min_last_with_inplace_kd():
    s = create_sampler("sandwich", SPACE, n_random=3, seed=1)
    seen = set()
    for step in range(30):
        plan = s.plan(step, BATCH)
        assert len(plan) == 5
        first, last = plan.tasks[0], plan.tasks[-1]
        assert first.arch == SPACE.max_arch() and first.teacher and first.regularize and first.recipe.hard > 0
        assert last.arch == SPACE.min_arch() and last.recipe.needs_inplace_teacher and not last.regularize
        assert all(t.tag == "random" and not t.regularize for t in plan.tasks[1:-1])
        seen |= {t.arch.id for t in plan.tasks[1:-1]}
    assert len(seen) > 50  # the random children really vary


def test_sampler_state_round_trip_reproduces_future_plans():
    a = create_sampler("sandwich", SPACE, n_random=2, seed=5)
    for step in range(3):
        a.plan(step, BATCH)
    b = create_sampler("sandwich", SPACE, n_random=2, seed=99)
    b.load_state_dict(a.state_dict())
    assert [a.plan(s, BATCH).archs for s in range(5)] == [b.plan(s, BATCH).archs for s in range(5)]


def test_choices_keywords_and_values():
    c = Choices(SPACE, {"ks": "top2", "e": [3], "d": "max", "r": "min"})
    assert c.values("ks") == [5, 7] and c.values("e") == [3] and c.values("d") == [2] and c.values("r") == [28]
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = c.sample(rng)
        assert set(a.ks) <= {5, 7} and set(a.e) == {3} and set(a.d) == {2} and a.r == 28 and c.contains(a)
    assert c.min_arch().ks[0] == 5 and c.max_arch().ks[0] == 7
    assert not c.contains(SPACE.min_arch())


def test_bad_choice_lists_are_clear_errors():
    with pytest.raises(ChoiceError, match=r"phase 'x': e=6 is not a choice .* allowed values are \[2, 3, 4\]"):
        Choices(SPACE, {"e": [4, 6]}, label="phase 'x'")
    with pytest.raises(ChoiceError, match="unknown gene group"):
        Choices(SPACE, {"kernel": "all"})
    with pytest.raises(ChoiceError, match="topN"):
        Choices(SPACE, {"ks": "largest"})
    with pytest.raises(ChoiceError, match="1 <= N <= 3"):
        Choices(SPACE, {"ks": "top4"})


def test_progressive_phases_enable_only_their_choices_and_sort_when_expand_grows():
    ps = create_sampler("progressive", SPACE, kd_ratio=1.0)
    phases = ps.phases()
    assert [p.name for p in phases] == ["full", "kernel", "depth_1", "depth_2", "expand_1", "expand_2"]
    rng_batch = BATCH
    for i, p in enumerate(phases):
        c = p.sampler.choices
        for step in range(20):
            for a in p.sampler.plan(step, rng_batch).archs:
                assert c.contains(a)
        assert p.sampler.needs_fixed_teacher == (i > 0)
    full = phases[0].sampler.plan(0, BATCH).archs[0]
    assert set(full.ks) == {7} and set(full.e) == {4} and set(full.d) == {2}
    kernel = {k for s in range(30) for a in phases[1].sampler.plan(s, BATCH).archs for k in a.ks}
    assert kernel == {3, 5, 7}
    assert [len(p.sampler.plan(0, BATCH)) for p in phases] == [1, 1, 2, 2, 4, 4]
    assert [ps.sorts_channels(i) for i in range(6)] == [False] * 4 + [True, True]


def test_progressive_rejects_a_phase_outside_the_space():
    with pytest.raises(ChoiceError, match=r"phase 'wide'.*e=6"):
        create_sampler("progressive", SPACE, phases=[{"name": "wide", "choices": {"e": [6]}}])
    with pytest.raises(ValueError, match="unknown keys"):
        create_sampler("progressive", SPACE, phases=[{"name": "a", "epoch": 3}])
    # caught when the config is read, not after the earlier phases have trained
    with pytest.raises(ValueError, match=r"phase 'b': epochs must be >= 1, got 0"):
        create_sampler("progressive", SPACE, phases=[{"name": "a"}, {"name": "b", "epochs": 0}])
    with pytest.raises(ValueError, match=r"phase 'b': lr must be > 0"):
        create_sampler("progressive", SPACE, phases=[{"name": "a"}, {"name": "b", "lr": -0.1}])
    with pytest.raises(ChoiceError, match=r"phase 'deep': d=3 .* allowed values are \[1, 2\]"):
        create_sampler("progressive", create_space("ofa_mbv3_fmnist"), phases=[{"name": "deep", "choices": {"d": [3]}}])
