"""The ``kd`` section of every task's config: the distillation options the task runner reads.

A task narrows :attr:`KdConfig.METHODS` to the methods it implements and may add options of its own (the
parser's ``relations``); everything else is shared, so an option is written once for every task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from structkd.kd.schedules import teacher_annealing

__all__ = ["KdConfig", "KD_METHODS", "kd_weight", "kd_temperature", "parse_layer_pairs"]

KD_METHODS = ("structural", "posterior", "token", "topk", "topwk", "seqlevel", "none")
TEMPERATURE_SCHEDULES = ("constant", "anneal")
AUGMENTS = ("none", "adversarial")
MIXTURE_METHODS = ("structural", "posterior")
"""Methods whose cached teacher outputs are part marginals, which average into the mixture's marginals."""


@dataclass
class KdConfig:
    """Distillation options (see :mod:`structkd.kd`).

    ``method``: which teacher output the student learns from; ``temperature`` and ``temperature_mode``
    (``global``: the whole distribution, ``local``: per substructure); ``kd_weight``: the KD loss's share on
    labeled sentences (unlabeled ones get the KD loss alone); ``annealing: teacher`` moves that share from 1 to 0
    over training; ``top_k`` for the top-K methods; ``teacher``: the saved teacher's directory;
    ``teacher_outputs``: instead, a file of a black-box teacher's outputs on the distillation sentences (tags,
    k-best lists, probabilities, trees; ``docs/teachers.md``, :mod:`structkd.tasks.blackbox`); ``cache_dir``:
    where its outputs are cached (default ``output_dir/teacher_cache``); ``impossible``: what to do with teacher
    mass on structures the student cannot produce (``renormalize``: the teacher restricted to the student's
    structures, exact; ``ignore``; ``error``; see :mod:`structkd.kd.projections` and ``docs/teachers.md``).

    The toolbox (``docs/kd.md``, a section each): ``hidden_weight`` and ``hidden_layers`` (hidden-state matching
    through a learned projection), ``attention_weight`` (attention matching), ``mixup_weight`` and
    ``mixup_alpha`` (MixKD on mixed input embeddings), ``temperature_schedule: anneal`` (annealing KD),
    ``teachers`` and ``teacher_weights`` (the cross-entropy to a mixture of teachers), ``augment: adversarial``
    with ``augment_weight``, ``augment_rate`` and ``augment_candidates`` (MATE-KD-style word replacement).
    """

    method: str = "structural"
    temperature: float = 1.0
    temperature_mode: str = "global"
    kd_weight: float = 0.5
    annealing: str = "none"
    top_k: int = 5
    teacher: str | None = None
    teacher_outputs: str | None = None
    cache_dir: str | None = None
    impossible: str = "renormalize"
    # -- the toolbox (docs/kd.md): every option off by default -------------------------------------------
    hidden_weight: float = 0.0
    hidden_layers: str = "uniform"
    attention_weight: float = 0.0
    mixup_weight: float = 0.0
    mixup_alpha: float = 0.4
    temperature_schedule: str = "constant"
    teachers: list[str] = field(default_factory=list)
    teacher_weights: list[float] = field(default_factory=list)
    augment: str = "none"
    augment_weight: float = 0.0
    augment_rate: float = 0.15
    augment_candidates: int = 4

    METHODS: ClassVar[tuple[str, ...]] = KD_METHODS

    def __post_init__(self):
        checks = (("method", self.METHODS), ("annealing", ("none", "teacher")),
                  ("temperature_mode", ("global", "local")), ("impossible", ("renormalize", "ignore", "error")))
        for name, allowed in checks:
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"kd.{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.temperature <= 0 or not 0.0 <= self.kd_weight <= 1.0:
            raise ValueError(f"kd.temperature must be positive and kd.kd_weight in [0, 1], got "
                             f"{self.temperature} and {self.kd_weight}")
        check_toolbox(self)

    @property
    def teacher_dirs(self) -> list[str]:
        """Every teacher's directory: ``kd.teachers``, or ``[kd.teacher]`` (empty when neither is set)."""
        return list(self.teachers) if self.teachers else ([self.teacher] if self.teacher else [])

    @property
    def mixture_weights(self) -> list[float]:
        """The teachers' normalized mixture weights (uniform unless ``kd.teacher_weights``)."""
        n = len(self.teacher_dirs)
        weights = list(self.teacher_weights) or [1.0] * n
        return [w / sum(weights) for w in weights]

    @property
    def online(self) -> bool:
        """Whether an option needs the teacher during training (``docs/kd.md``: its cost per option)."""
        return (self.temperature_schedule == "anneal" or self.hidden_weight > 0 or self.attention_weight > 0
                or self.mixup_weight > 0 or (self.augment != "none" and self.augment_weight > 0))


def check_toolbox(kd: KdConfig) -> None:
    """Refuse toolbox settings that cannot work, by key, when the config is built."""
    for name, allowed in (("temperature_schedule", TEMPERATURE_SCHEDULES), ("augment", AUGMENTS)):
        if getattr(kd, name) not in allowed:
            raise ValueError(f"kd.{name} must be one of {', '.join(allowed)}, got {getattr(kd, name)!r}")
    for name in ("hidden_weight", "attention_weight", "mixup_weight", "augment_weight"):
        if getattr(kd, name) < 0:
            raise ValueError(f"kd.{name} must be >= 0, got {getattr(kd, name)}")
    if kd.mixup_alpha <= 0:
        raise ValueError(f"kd.mixup_alpha (the Beta(alpha, alpha) of the mixing weights) must be positive, got "
                         f"{kd.mixup_alpha}")
    if not 0.0 < kd.augment_rate <= 1.0 or kd.augment_candidates < 1:
        raise ValueError(f"kd.augment_rate must be in (0, 1] and kd.augment_candidates >= 1, got "
                         f"{kd.augment_rate} and {kd.augment_candidates}")
    given = [name for name in ("teacher", "teachers", "teacher_outputs") if getattr(kd, name)]
    if len(given) > 1:
        raise ValueError(f"set one of kd.teacher (one teacher), kd.teachers (a list) or kd.teacher_outputs (a file "
                         f"of a teacher's outputs), not {'both' if len(given) == 2 else 'all of'} "
                         f"{' and '.join('kd.' + g for g in given)}")
    if kd.teacher_outputs and kd.online:
        raise ValueError("kd.teacher_outputs is a teacher known only by its outputs on the distillation "
                         "sentences: the online options (kd.temperature_schedule=anneal, kd.hidden_weight, "
                         "kd.attention_weight, kd.mixup_weight, kd.augment) need the teacher's model")
    if kd.teacher_weights and len(kd.teacher_weights) != len(kd.teachers):
        raise ValueError(f"kd.teacher_weights has {len(kd.teacher_weights)} entries for {len(kd.teachers)} "
                         f"kd.teachers")
    if kd.teacher_weights and (min(kd.teacher_weights) < 0 or sum(kd.teacher_weights) <= 0):
        raise ValueError(f"kd.teacher_weights must be non-negative with a positive sum, got {kd.teacher_weights}")
    if kd.teachers and kd.method not in MIXTURE_METHODS:
        raise ValueError(f"kd.teachers distils the teachers' mixture through its marginals: kd.method must be one "
                         f"of {', '.join(MIXTURE_METHODS)}, got {kd.method!r}")
    parse_layer_pairs(kd.hidden_layers)  # a malformed kd.hidden_layers is refused here


def parse_layer_pairs(spec: str) -> str | list[tuple[int, int]]:
    """``kd.hidden_layers``: ``uniform``, ``last``, or explicit ``(student, teacher)`` hidden-state pairs written
    ``"1-2,2-4"`` (0 is the embeddings' output, ``i`` layer ``i``'s; a dash, since YAML reads ``1:2`` as a
    number)."""
    if spec in ("uniform", "last"):
        return spec
    try:
        pairs = [tuple(int(x) for x in item.split("-")) for item in spec.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 or min(p) < 0 for p in pairs):
        raise ValueError(f"kd.hidden_layers must be 'uniform', 'last' or student-teacher pairs such as "
                         f"'1-2,2-4', got {spec!r}")
    return pairs


def kd_weight(kd: KdConfig, step: int, total_steps: int) -> float:
    """The weight of the KD loss at ``step``: constant, or linearly annealed from 1 to 0 (teacher annealing)."""
    if kd.annealing == "teacher":
        return teacher_annealing(step, total_steps, start=1.0, end=0.0)
    return kd.kd_weight


def kd_temperature(kd: KdConfig, fraction: float) -> float:
    """The temperature at ``fraction`` of the run: ``kd.temperature`` (``constant``), or linear from
    ``kd.temperature`` at the start to 1 at the end (``anneal``: annealing KD, Jafari et al. 2021)."""
    if kd.temperature_schedule == "anneal":
        fraction = min(max(fraction, 0.0), 1.0)
        return kd.temperature + (1.0 - kd.temperature) * fraction
    return kd.temperature
