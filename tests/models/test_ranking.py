import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from meshfl.models.ranking import average_precision, roc_auc


@pytest.mark.parametrize("seed", range(20))
def test_ranking_metrics_equal_scikit_learns_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    labels = rng.random(n) < rng.uniform(0.05, 0.95)
    labels[:2] = [True, False]
    # few distinct values, so that many scores tie
    scores = np.round(rng.normal(labels * rng.uniform(0, 2), 1.0), int(rng.integers(0, 3)))
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )


def test_ranking_metrics_need_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="differ in length"):
        average_precision([1, 0], [0.2])
