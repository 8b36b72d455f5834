"""Knowledge-distillation objectives: pure functions of distributions and tensors.

The heart is :func:`structural_kd_loss`, the exact cross-entropy between a teacher's and a student's
structure distributions, for any registered pair of factorizations (:mod:`structkd.kd.projections`).
Around it: temperature and schedules, the baselines of the literature, representation matching and
mixup.
"""

from structkd.kd.baselines import posterior_kd_loss, seqlevel_kd_loss, token_kd_loss, topk_kd_loss
from structkd.kd.mixup import mix_embeddings, sample_mixup
from structkd.kd.projections import (
    chain_from_marginals,
    find_projection,
    head_offset_marginals,
    project,
    register_projection,
    restrict_chain,
    restrict_teacher,
    restriction_lost_mass,
    supported_pairs,
)
from structkd.kd.representation import (
    HiddenStateKD,
    attention_kd_loss,
    attention_layer_map,
    hidden_layer_map,
    uniform_layer_map,
)
from structkd.kd.schedules import AnnealingKD, interpolate, teacher_annealing
from structkd.kd.span_to_tags import build_span_tag_map, span_tag_marginals
from structkd.kd.structural import (
    average_marginals,
    kd_teacher_marginals,
    local_temperature,
    restricted_chain_marginals,
    structural_kd_loss,
    structural_kd_loss_from_marginals,
)

__all__ = [
    "AnnealingKD",
    "HiddenStateKD",
    "attention_kd_loss",
    "attention_layer_map",
    "average_marginals",
    "build_span_tag_map",
    "chain_from_marginals",
    "find_projection",
    "head_offset_marginals",
    "hidden_layer_map",
    "interpolate",
    "kd_teacher_marginals",
    "local_temperature",
    "mix_embeddings",
    "posterior_kd_loss",
    "project",
    "register_projection",
    "restrict_chain",
    "restrict_teacher",
    "restricted_chain_marginals",
    "restriction_lost_mass",
    "sample_mixup",
    "seqlevel_kd_loss",
    "span_tag_marginals",
    "structural_kd_loss",
    "structural_kd_loss_from_marginals",
    "supported_pairs",
    "teacher_annealing",
    "token_kd_loss",
    "topk_kd_loss",
    "uniform_layer_map",
]
