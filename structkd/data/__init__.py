"""The data layer: corpus readers and writers, vocabularies."""

from structkd.data.columns import CorpusError, Sentence, label_vocabulary, read_columns, read_text, write_columns

__all__ = ["CorpusError", "Sentence", "label_vocabulary", "read_columns", "read_text", "write_columns"]
