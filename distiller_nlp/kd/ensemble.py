"""Several teachers: their soft targets averaged into logits the prediction losses accept."""

from __future__ import annotations

import torch


def ensemble_logits(logits: list, temperature: float, average_logits: bool = False) -> torch.Tensor:
    """Averaged soft targets of several teachers, as logits the prediction losses accept.

    Returns ``T · log( mean_k softmax(z_k / T) )``, so ``softmax(result / T)`` is exactly the teachers' mean
    probability at temperature T (what ``kd`` and ``soft_ce`` read); with ``average_logits`` (``logits_mse``, and
    regression) the plain mean of the logits. For ``nkd``/``dkd``, whose target-class terms read the teacher at
    τ = 1, the ensemble is the one at temperature T.
    """
    stacked = torch.stack([z.float() for z in logits])
    if average_logits:
        return stacked.mean(0)
    t = float(temperature)
    log_mean = torch.logsumexp(torch.log_softmax(stacked / t, dim=-1), dim=0) - torch.log(
        torch.tensor(float(len(logits))))
    return t * log_mean
