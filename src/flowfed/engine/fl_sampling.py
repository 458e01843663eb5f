"""Poisson sampling of a federated step's participants (``sampling: poisson``).

Each round every participant takes part independently with probability ``fraction_fit``,
so a round's size varies. This is the sampling the Poisson-subsampled Gaussian analysis
of DP-FedAvg assumes (McMahan et al. 2018), which the step's accountant then uses (add
or remove one node, sensitivity C), and the private mean divides the noisy sum by the
*expected* number of participants ``q · n`` rather than the drawn one (the drawn count
would tell whether a node took part).

A round that draws fewer than it can run with (``min_nodes``, at least 1; 2 under secure
aggregation) is skipped: no node trains, the global model stays as it is, and under DP
the accountant still counts the round (the mechanism's output is a function of the
sample, so skipping it spends no more than the analysis allows).

Example:
    >>> # chosen = poisson_round(driver, r, alive, gone, rng)   # [] when skipped
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from flowfed.plan.federated import sample_poisson

if TYPE_CHECKING:
    from flowfed.engine.federated import FederatedDriver


def poisson_round(
    driver: FederatedDriver,
    r: int,
    alive: list[tuple[str, str | None]],
    gone: dict[str, Any],
    rng: np.random.Generator,
) -> list[tuple[str, str | None]]:
    """Round ``r``'s Poisson sample among the step's participants; ``[]``: skip it."""
    s, fed = driver.settings, driver.fed
    # Drawn over every participant, offline or not: the analysis is over the population.
    drawn = sample_poisson(fed.participants, s.fraction_fit, rng)
    chosen = [p for p in drawn if p[0] not in gone]
    if len(chosen) < len(drawn):
        left = sorted({p[0] for p in drawn if p[0] in gone})
        driver.sink(
            "log",
            {"level": "warning", "message": f"round {r}: leaving out offline {', '.join(left)}"},
        )
    need = max(s.min_nodes or 1, 2 if s.secure_aggregation else 1)
    if len(chosen) >= need:
        return chosen
    driver.server.skip_round()
    driver.sink(
        "log",
        {
            "level": "info",
            "message": f"round {r}: Poisson sampling drew {len(chosen)} participant(s), fewer "
            f"than the {need} a round needs: skipped (the global model is unchanged)",
        },
    )
    return []
