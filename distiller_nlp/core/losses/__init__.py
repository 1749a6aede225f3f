"""The shared distillation-loss core (torch only), used by ``distiller_nlp``, ``autodistil`` and ``vision_kd``.

Importing this package registers every built-in loss under its canonical name:

===================  ===========================================  ==========================================
name                 object                                       paper
===================  ===========================================  ==========================================
``kd``               :func:`kd_loss`                              Hinton et al. 2015
``soft_ce``          :func:`soft_ce_loss`                         Distiller ``ce`` (He et al. 2021)
``logits_mse``       :func:`logits_mse_loss`                      Distiller ``mse``
``hard_ce``          :func:`hard_ce_loss`                         supervised CE / regression MSE
``nkd``              :func:`nkd_loss`                             Yang et al. ICCV 2023
``dkd``              :func:`dkd_loss`                             Zhao et al. CVPR 2022
``hidden_mse``       :func:`hidden_mse_loss`                      FitNets / TinyBERT
``hidden_ce``        :func:`hidden_ce_loss`                       Distiller intermediate ``ce``
``cosine``           :func:`cosine_loss`                          DistilBERT
``pkd``              :func:`pkd_loss`                             BERT-PKD (Sun et al. 2019)
``attention_score``  :func:`attention_score_loss`                 TinyBERT (mse) / MiniLM (kl)
``relation``         :func:`qkv_relation_loss`                    MiniLMv2 / AutoDistil
``mi_alpha``         :class:`MIAlphaLoss` (nn.Module, stateful)   Distiller MI-α, Poole et al. 2019 bounds
``bdkd``             :func:`balanced_kl_loss`                     BD-KD, Amara et al. 2022 (reconstructed)
``uskd``             :func:`uskd_loss`                            USKD, Yang et al. ICCV 2023
``aloss``            :func:`assistive_loss`                       Fard & Mahoor 2022 (landmark KD-Loss)
``landmark_main``    :func:`landmark_main_loss`                   Fard & Mahoor 2022
``landmark_kd``      :func:`landmark_kd_loss`                     Fard & Mahoor 2022
===================  ===========================================  ==========================================

``get_loss(name)`` returns the function, or the module class for stateful losses; users add their own with
``@register_loss("name", kind=..., takes=...)`` (see :mod:`.registry`: what a loss declares decides where it may be
used, e.g. :func:`prediction_losses` is what ``kd.pred_loss`` accepts).
"""

from .features import (attention_score_loss, cosine_loss, hidden_ce_loss, hidden_mse_loss, masked_mean, pkd_loss,
                       scaled_scores, score_divergence, split_heads)
from .logits import (balanced_kl_loss, dkd_loss, dkd_terms, entropy_gap_weights, hard_ce_loss, kd_loss,
                     logits_mse_loss, nkd_loss, soft_ce_loss, uskd_loss, uskd_terms, zipf_soft_labels)
from .mutual_info import (MIAlphaLoss, infonce_lower_bound, log_loo_mean, logmeanexp_offdiag, mi_alpha_lower_bound,
                          nwj_lower_bound, tuba_lower_bound)
from .registry import (LOSSES, get_loss, is_stateful, list_losses, loss_kind, loss_takes, prediction_losses,
                       register_loss, unregister_loss)
from .regression import assist_weights, assistive_loss, landmark_kd_loss, landmark_main_loss
from .relations import qkv_relation_loss, relation_loss

__all__ = [
    # registry
    "LOSSES",
    "loss_takes",
    "prediction_losses",
    "register_loss",
    "unregister_loss",
    "get_loss",
    "list_losses",
    "is_stateful",
    "loss_kind",
    # logits
    "kd_loss",
    "soft_ce_loss",
    "logits_mse_loss",
    "hard_ce_loss",
    "nkd_loss",
    "dkd_loss",
    "dkd_terms",
    "entropy_gap_weights",
    "balanced_kl_loss",
    "zipf_soft_labels",
    "uskd_terms",
    "uskd_loss",
    # regression (landmark KD-Loss)
    "assist_weights",
    "assistive_loss",
    "landmark_main_loss",
    "landmark_kd_loss",
    # features
    "hidden_mse_loss",
    "hidden_ce_loss",
    "cosine_loss",
    "pkd_loss",
    "attention_score_loss",
    "masked_mean",
    "split_heads",
    "scaled_scores",
    "score_divergence",
    # relations
    "relation_loss",
    "qkv_relation_loss",
    # mutual information
    "MIAlphaLoss",
    "infonce_lower_bound",
    "nwj_lower_bound",
    "tuba_lower_bound",
    "mi_alpha_lower_bound",
    "log_loo_mean",
    "logmeanexp_offdiag",
]
