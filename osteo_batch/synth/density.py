"""The synthetic cohort's generative model of bone: one latent density per woman, her DXA T-scores from it.

Each woman has one latent bone density ``z`` (standard normal, falling with
age). It shows in her radiograph (:mod:`osteo_batch.synth.phantom`) the way
density does on film, and her DXA T-scores are drawn from the same ``z`` plus
site offsets and measurement noise. The label (WHO class of the minimum
T-score) is therefore a noisy function of ``z``, and the best AUC any image
model can reach is the AUC of ``z`` itself: :func:`ceiling_auc` computes it by
construction, and ``truth.csv`` lets training report it on its own split.
"""

from __future__ import annotations

import numpy as np

from osteo_batch.models.metrics import auc

#: T-score model: T_site = T_MEAN + T_SLOPE * z + site offset + noise.
T_MEAN = -0.9
T_SLOPE = 1.1
SITE_OFFSETS = {"t_lumbar_spine": 0.0, "t_femoral_neck": -0.15, "t_total_hip": 0.25}
SITE_NOISE_SD = 0.45
#: How age lowers the latent density (per year over 50), as in population data.
Z_PER_YEAR = -0.03


def t_scores(z: float, rng: np.random.Generator) -> dict[str, float]:
    """DXA T-scores at the three sites for latent density ``z``."""
    return {
        site: round(T_MEAN + T_SLOPE * z + off + rng.normal(0.0, SITE_NOISE_SD), 1)
        for site, off in SITE_OFFSETS.items()
    }


def latent_density(age: float, rng: np.random.Generator) -> float:
    """A woman's latent bone density ``z`` at ``age``: standard normal, lower by :data:`Z_PER_YEAR` a year past 50."""
    return float(rng.normal(0.0, 1.0) + Z_PER_YEAR * max(0.0, age - 50.0))


def ceiling_auc(n: int = 200_000, seed: int = 7) -> float:
    """Best achievable osteoporosis-vs-rest AUC, by construction.

    A model that recovered ``z`` exactly from the image could do no better than
    ranking by ``z``; the labels' only other source of variation is DXA
    measurement noise, which no image holds. Monte Carlo over the generative
    model with ages drawn as in the cohort.
    """
    rng = np.random.default_rng(seed)
    age = rng.uniform(50, 88, n)
    z = rng.normal(0.0, 1.0, n) + Z_PER_YEAR * (age - 50.0)
    t = np.stack(
        [T_MEAN + T_SLOPE * z + off + rng.normal(0.0, SITE_NOISE_SD, n) for off in SITE_OFFSETS.values()]
    )
    y = (np.round(t, 1).min(axis=0) <= -2.5).astype(int)
    return float(auc(y, -z))
