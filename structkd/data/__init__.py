"""The data layer: corpus readers and writers, vocabularies."""

from structkd.data.columns import CorpusError, Sentence, label_vocabulary, read_columns, read_text, write_columns
from structkd.data.conllu_io import (
    ParsedSentence,
    heads_tensor,
    read_conllu,
    read_tokenized_text,
    treebank_stats,
    write_conllu,
)

__all__ = ["CorpusError", "ParsedSentence", "Sentence", "heads_tensor", "label_vocabulary", "read_columns",
           "read_conllu", "read_text", "read_tokenized_text", "treebank_stats", "write_columns", "write_conllu"]
