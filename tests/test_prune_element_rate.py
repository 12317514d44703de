"""The element rate of a latency model's MACs line: elements counted beside MACs, the two rates fitted on
every cut the profile times, written with the file, and used by the pruner for a cut's latency sparsity.

Nothing is timed: ``measure`` is a deterministic function of the cut model's MACs and elements.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cpd.combing import comb
from cpd.flops import count_macs, count_work
from cpd.importance.latency import LatencyModel
from cpd.prune import PruneConfig, Pruner
from cpd.prune.latency import fit_work_rates, profile_latency
from test_prune_latency import run  # the training loop without training
from test_prune_macs_line import OVERHEAD, X, TwoHeads, infer_forward, train_forward

pytestmark = pytest.mark.usefixtures("one_thread")

PER_MAC, PER_ELEMENT = 1e-9, 4e-8


def work_seconds(model: nn.Module) -> float:
    """A 'latency' linear in the MACs and the elements inference runs: the two rates fit it exactly."""
    macs, elements = count_work(model, (X,), infer_forward)
    return OVERHEAD + PER_MAC * macs + PER_ELEMENT * elements


def profiled(measure=work_seconds, elements: bool = True) -> tuple[TwoHeads, object, LatencyModel]:
    model = TwoHeads().eval()
    graph = comb(model, (X,), forward_fn=train_forward)
    lm = profile_latency(model, graph, measure, "fake", X.shape, round_to=2, align=False,
                         macs=lambda m: float(count_macs(m, (X,), infer_forward)),
                         elements=(lambda m: float(count_work(m, (X,), infer_forward)[1])) if elements else None)
    return model, graph, lm


class Tiny(nn.Module):
    def __init__(self, k: int, m: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(k, m))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x @ self.w).softmax(-1)  # a product (MACs), then n * m elements
        return y.view(-1).unsqueeze(0) + 1.0  # two views (no elements), then n * m elements


def test_elements_are_the_outputs_of_every_operation_but_products_and_views() -> None:
    n, k, m = 5, 7, 3
    assert count_work(Tiny(k, m), (torch.randn(n, k),)) == (n * k * m, 2 * n * m)
    wide, narrow = (count_work(Tiny(k, w), (torch.randn(n, k),))[1] for w in (8, 2))
    assert wide == 4 * narrow
    # counted on the meta device too (no arithmetic), as the pruner counts its candidates
    meta = Tiny(k, m).to("meta")
    assert count_work(meta, (torch.zeros(n, k, device="meta"),)) == (n * k * m, 2 * n * m)


def test_profile_fits_both_rates_of_a_latency_in_macs_and_elements() -> None:
    model, _, lm = profiled()
    macs, elements = count_work(model, (X,), infer_forward)
    base = work_seconds(model)
    assert lm.baseline == pytest.approx(base)
    assert lm.macs_line == pytest.approx(PER_MAC * macs / base, rel=1e-6)
    assert lm.element_rate == pytest.approx(PER_ELEMENT * elements / base, rel=1e-6)
    rates = lm.info["work_rates"]
    assert rates["fitted"] and rates["points"] > len(lm.info["joint"])
    # the line fitted on the whole-model cuts alone carries the elements' share in its one slope
    assert rates["line_alone"] != pytest.approx(lm.macs_line, rel=1e-3)
    assert all("elements_share_saved" in p for p in lm.info["joint"])
    # without an element count the profile keeps the line of MACs alone, as before
    _, _, alone = profiled(elements=False)
    assert alone.element_rate is None and "work_rates" not in alone.info
    assert alone.macs_line == pytest.approx(rates["line_alone"])


def test_the_pruner_predicts_every_cut_by_both_rates() -> None:
    model, graph, lm = profiled()
    cfg = PruneConfig(criterion="magnitude", metric="latency", interval=1, thresholds=(0.2, 0.4), step_fraction=0.1,
                      round_to=2)
    pruner = run(Pruner(TwoHeads(), (X,), cfg, forward_fn=train_forward, graph=graph, latency=lm,
                        measure=work_seconds, latency_forward=infer_forward))
    assert pruner.done and not pruner.exhausted and pruner.reached == [0.2, 0.4]
    assert pruner.checks and all(c["predicted"] == pytest.approx(c["measured"], abs=1e-9) for c in pruner.checks)
    assert pruner.correction == pytest.approx(1.0)
    assert pruner.plan()["summary"]["latency"]["element_rate"] == lm.element_rate
    # the same cut by the line of MACs alone is off: the pruner's cuts are not the uniform ones it was fitted on
    from dataclasses import replace

    alone = replace(lm, macs_line=lm.info["work_rates"]["line_alone"], element_rate=None)
    cut = pruner.export()[0].eval()
    truth = 1.0 - work_seconds(cut) / lm.baseline
    share = 1.0 - count_macs(cut, (X,), infer_forward) / count_macs(model, (X,), infer_forward)
    assert 1.0 - lm.predict_from_macs(share, 1.0 - count_work(cut, (X,), infer_forward)[1]
                                      / count_work(model, (X,), infer_forward)[1]) / lm.baseline \
        == pytest.approx(truth, abs=1e-9)
    assert abs(1.0 - alone.predict_from_macs(share) / lm.baseline - truth) > 1e-4


def test_rates_are_fitted_only_where_the_cuts_separate_them() -> None:
    def point(s: float, e: float, b: float = 0.8, c: float = 0.2) -> dict:
        return {"macs_share_saved": s, "elements_share_saved": e, "saving": b * s + c * e}

    spread = [point(0.1, 0.02), point(0.3, 0.25), point(0.2, 0.01), point(0.6, 0.5)]
    assert fit_work_rates(spread) == pytest.approx((0.8, 0.2))
    assert fit_work_rates(spread[:2]) is None  # two points: no check on the fit
    assert fit_work_rates([point(s, s / 2) for s in (0.1, 0.3, 0.5)]) is None  # uniform cuts: collinear
    assert fit_work_rates([point(s, e, c=-0.1) for s, e in ((0.1, 0.02), (0.3, 0.25), (0.6, 0.5))]) is None


def test_a_latency_in_macs_alone_gets_no_element_rate_worth_a_share() -> None:
    def macs_seconds(model: nn.Module) -> float:
        return OVERHEAD + PER_MAC * count_macs(model, (X,), infer_forward)

    _, _, lm = profiled(macs_seconds)
    assert lm.element_rate is None or lm.element_rate < 1e-6
    assert lm.macs_line == pytest.approx(lm.info["work_rates"]["line_alone"], rel=1e-4)


def test_file_round_trip_reads_version_4_as_a_line_of_macs_alone() -> None:
    _, _, lm = profiled()
    back = LatencyModel.from_dict(lm.to_dict())
    assert back.element_rate == lm.element_rate and back.macs_line == lm.macs_line
    old = {**lm.to_dict(), "version": 4}
    del old["element_rate"]
    assert LatencyModel.from_dict(old).element_rate is None
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="element_rate"):
            LatencyModel.from_dict({**lm.to_dict(), "element_rate": bad})
    with pytest.raises(ValueError, match="element_rate"):
        LatencyModel.from_dict({**lm.to_dict(), "macs_line": None})
