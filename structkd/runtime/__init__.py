"""A torch-free runtime for exported models: numpy and ONNX Runtime only.

``structkd.runtime.load(directory)`` reads a directory written by :func:`structkd.export.export_model` (or
``structkd export MODEL OUT --format onnx``) and returns a :class:`Tagger` or :class:`Parser`, callable on a
string, a list of strings or a list of token lists.  The ONNX graph computes the scores; decoding (constrained
Viterbi, Eisner, Chu-Liu-Edmonds, tree repair), vocabulary lookup and sub-word tokenization (the
``tokenizers`` library) run here, in numpy.  Nothing in this package imports torch.
"""

from structkd.runtime.models import ExportedModel, ParsedSentence, Parser, TaggedSentence, Tagger, load

__all__ = ["ExportedModel", "ParsedSentence", "Parser", "TaggedSentence", "Tagger", "load"]
