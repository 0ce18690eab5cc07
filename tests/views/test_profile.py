from __future__ import annotations

import json
from pathlib import Path

import pytest

from personalign.records.dimensions import Dimension, load_dimensions
from personalign.records.schema import Comment, Pair, UserContext
from personalign.views.profile import profile_text, profile_values, user_profile


def vectors_with_means(means: list[float], n: int) -> list[list[float]]:
    """n direction vectors (values 0 / 0.5 / 1) whose per-dimension means are exactly `means`."""
    vecs = [[0.0] * len(means) for _ in range(n)]
    for d, mean in enumerate(means):
        halves = round(mean * 2 * n)
        assert halves == mean * 2 * n, "mean not reachable with n vectors"
        for v in vecs:
            step = min(halves, 2)
            v[d] = step / 2
            halves -= step
    return vecs


DIMS = [Dimension(i, "", f"pos{i}", f"neg{i}") for i in range(4)]


def test_means_of_exactly_0_4_and_0_6_map_to_0_and_1():
    vecs = [[0.5, 1, 0.5], [0.5, 0.5, 0.5], [0, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]
    assert profile_values(vecs) == [0.0, 1.0, 0.5]


@pytest.mark.parametrize("n", [5, 10, 15, 30])
def test_thresholds_exact_for_any_count(n):
    assert profile_values(vectors_with_means([0.4, 0.6, 0.5], n)) == [0.0, 1.0, 0.5]


def test_means_between_thresholds_stay_neutral_when_another_dimension_is_emitted():
    # 0.2 emits a 0, so no fallback: 0.45 and 0.55 stay neutral
    assert profile_values(vectors_with_means([0.45, 0.55, 0.5, 0.2], 10)) == [0.5, 0.5, 0.5, 0.0]


def test_fallback_max_dims_become_1_when_one_minus_max_below_min():
    # M = 0.55, m = 0.5: 1 - 0.55 = 0.45 < 0.5 -> every dimension at M becomes 1
    assert profile_values(vectors_with_means([0.55, 0.5, 0.5], 10)) == [1.0, 0.5, 0.5]


def test_fallback_ties_at_max_all_become_1():
    assert profile_values(vectors_with_means([0.55, 0.5, 0.55, 0.5], 10)) == [1.0, 0.5, 1.0, 0.5]


def test_fallback_min_dims_become_0_otherwise():
    # M = 0.55, m = 0.45: 0.45 < 0.45 is false -> every dimension at m becomes 0
    assert profile_values(vectors_with_means([0.45, 0.55, 0.5, 0.45], 10)) == [0.0, 0.5, 0.5, 0.0]
    # M = 0.5, m = 0.45: 0.5 < 0.45 is false
    assert profile_values(vectors_with_means([0.5, 0.45, 0.5], 10)) == [0.5, 0.0, 0.5]


def test_all_neutral_means_every_dimension_becomes_0():
    # M = m = 0.5: 1 - 0.5 < 0.5 is false, so every dimension equal to m becomes 0
    assert profile_values([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]) == [0.0, 0.0, 0.0]
    assert profile_text(profile_values([[0.5] * 4]), DIMS) == "neg0, neg1, neg2, neg3"


def test_no_vectors_gives_none():
    assert profile_values([]) is None
    assert user_profile(UserContext(pairs=[Pair("p", "a", "b")]), [Pair("p", "a", "b")], DIMS) is None


def test_invalid_vectors_are_rejected():
    with pytest.raises(ValueError, match="0, 0.5 or 1"):
        profile_values([[0.3, 1]])
    with pytest.raises(ValueError, match="length"):
        profile_values([[0, 1], [1]])
    with pytest.raises(ValueError, match="dimension table"):
        profile_text([1.0, 0.0], DIMS)


def test_profile_text_uses_real_table_in_index_order(dimensions_path):
    dims = load_dimensions(dimensions_path)
    values = [0.5] * len(dims)
    values[0], values[1], values[89] = 1, 0, 1
    assert profile_text(values, dims) == f"Young, Male, {dims[89].positive}"


def test_user_profile_sources_in_order():
    a, b = [1, 0, 0.5, 0.5], [1, 1, 0.5, 0.5]
    items = [Comment("p", "c", a), Pair("p", "x", "y", b), Pair("q", "x", "y")]
    user = UserContext(ugc=items[:1], pairs=items[1:], direction=[0, 0, 0, 0])
    # the items' vectors win over the record's own vector; means [1, 0.5, .5, .5] -> dim 0 only
    assert user_profile(user, items, DIMS) == "pos0"
    # no item vectors: no profile; the record's own vector describes the pair being predicted
    assert user_profile(user, items[2:], DIMS) is None
    # a ready profile wins over everything
    user.profile = "Likes humor"
    assert user_profile(user, items, DIMS) == "Likes humor"


def test_the_package_ships_the_dimension_table(dimensions_path, monkeypatch):
    """The packaged copy is the AlignX table itself, and it is the default wherever the package runs."""
    from personalign.records import dimensions

    monkeypatch.delenv(dimensions.ENV_VAR, raising=False)
    assert dimensions.dimensions_path() == dimensions.PACKAGED
    assert json.loads(dimensions.PACKAGED.read_text()) == json.loads(dimensions_path.read_text())
    assert dimensions.PACKAGED.relative_to(Path(dimensions.__file__).resolve().parents[1])  # inside the package
