"""Models: BiLSTM and transformer taggers, the biaffine span head, biaffine first- and second-order parsers,
parsing as sequence labeling, saving and loading.

Every model's ``forward`` returns a structured distribution (:mod:`structkd.structs`; parsers also return
relation logits), so its gold loss is ``-dist.log_prob(gold)`` and its KD loss
:func:`structkd.kd.structural_kd_loss`.  The transformer module
imports ``transformers`` only when an encoder is built.
"""

from structkd.models.parsers import (
    BiaffineArcScorer,
    BiaffineParser,
    BiaffineRelScorer,
    SiblingScorer,
    build_rels,
    build_vocab,
    repair_tree,
    save_parser,
)
from structkd.models.seqlabel_parser import SeqLabelingParser, build_labels
from structkd.models.serialization import load_pretrained, load_vocab, register_model, save_pretrained
from structkd.models.span import SpanHead, chart_to_tags, span_labels_from_tags, tags_to_chart
from structkd.models.taggers import BiLSTMEncoder, BiLSTMTagger, CharCNN, CRFHead, MaxEntHead
from structkd.models.transformer import (
    EncoderOutput,
    SubwordBatch,
    SubwordEncoder,
    TransformerTagger,
    kept_layers,
    shrink_encoder,
    student_from_teacher,
    window_layout,
)
from structkd.models.vocab import TaggerVocab, Vocabulary

__all__ = [
    "BiaffineArcScorer", "BiaffineParser", "BiaffineRelScorer", "SeqLabelingParser", "SiblingScorer", "build_labels",
    "build_rels", "build_vocab", "repair_tree", "save_parser",
    "BiLSTMEncoder", "BiLSTMTagger", "CRFHead", "CharCNN", "EncoderOutput", "MaxEntHead", "SpanHead", "SubwordBatch",
    "SubwordEncoder", "TaggerVocab", "TransformerTagger", "Vocabulary", "chart_to_tags", "kept_layers",
    "load_pretrained", "load_vocab", "register_model", "save_pretrained", "shrink_encoder", "span_labels_from_tags",
    "student_from_teacher", "tags_to_chart", "window_layout",
]
