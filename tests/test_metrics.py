import numpy as np
import pytest

from personalign.metrics import bootstrap, pair_correct, sliced_accuracy


def test_pair_correct_uses_reference_margin():
    pc, pr = np.array([-10.0, -10.0, -5.0]), np.array([-12.0, -9.0, -5.0])
    rc, rr = np.array([-11.0, -10.0, -6.0]), np.array([-11.0, -11.0, -6.0])
    # margins: (2 - 0) > 0, (-1 - 1) < 0, (0 - 0) not > 0
    assert pair_correct(pc, pr, rc, rr).tolist() == [True, False, False]
    assert pair_correct(pc, pr).tolist() == [True, False, False]
    assert pair_correct(np.array([-1.0]), np.array([-3.0]), np.array([-1.0]), np.array([-2.0])).tolist() == [True]


def test_bootstrap_interval_contains_mean_and_is_deterministic():
    x = np.array([1.0] * 70 + [0.0] * 30)
    a, b = bootstrap(x, seed=3), bootstrap(x, seed=3)
    assert a == b
    assert a.value == pytest.approx(0.7)
    assert a.low < 0.7 < a.high
    # binomial standard error ~0.046: a 95% interval spans roughly +-0.09
    assert 0.1 < a.high - a.low < 0.25
    assert bootstrap([1.0, 1.0, 1.0]).low == 1.0


def test_sliced_accuracy_groups_by_slice():
    res = sliced_accuracy([1, 0, 1, 1], ["ugc", "ugc", "all", "none"], n_boot=200)
    assert res["overall"].value == 0.75 and res["overall"].n == 4
    assert res["ugc"].value == 0.5 and res["ugc"].n == 2
    assert res["all"].value == 1.0 and "pairs" not in res
    with pytest.raises(ValueError, match="2 verdicts but 1 slice labels"):
        sliced_accuracy([1, 0], ["ugc"])


def test_paired_difference_resamples_records_with_both_values():
    from personalign.metrics import paired_difference

    after = np.array([1, 1, 1, 0, 1, 0, 1, 1, 1, 1], dtype=float)
    before = np.array([0, 1, 0, 0, 1, 0, 1, 0, 1, 1], dtype=float)
    d = paired_difference(after, before, n_boot=2000, seed=1)
    assert d.value == pytest.approx(0.3) and d.n == 10  # 3 records flipped to correct, none the other way
    assert d.low >= 0.0 and d.high <= 0.6  # per-record differences are 0 or +1, so no resample goes below 0
    unpaired = bootstrap(after, n_boot=2000, seed=1).high - bootstrap(before, n_boot=2000, seed=1).low
    assert d.high < unpaired
    assert paired_difference(before, after, n_boot=200).value == pytest.approx(-0.3)
    with pytest.raises(ValueError, match="paired values differ in number"):
        paired_difference(after, before[:5])
