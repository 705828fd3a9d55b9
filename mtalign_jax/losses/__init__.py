"""Loss functions (pure jnp): log-probs, DPO family and MAH-DPO reduction, reward models, PRMs."""
from mtalign_jax.losses.dpo import modpo_loss, multihead_reduce, preference_loss
from mtalign_jax.losses.logprobs import (IGNORE_INDEX, sequence_logps, sequence_logps_from_hidden,
                                         sft_loss, token_logps)
from mtalign_jax.losses.prm import (case_a_majority_labels, hindsight_value_targets,
                                    step_bce_loss, value_mse_loss)
from mtalign_jax.losses.reward import bradley_terry_loss, classifier_loss, positive_score

__all__ = [
    "IGNORE_INDEX", "sequence_logps", "token_logps", "sequence_logps_from_hidden", "sft_loss",
    "preference_loss", "multihead_reduce", "modpo_loss",
    "bradley_terry_loss", "classifier_loss", "positive_score",
    "step_bce_loss", "value_mse_loss", "hindsight_value_targets", "case_a_majority_labels",
]
