"""Export of trained students for inference without torch.

:func:`export_model` writes a saved tagger or parser as an ONNX graph of its scores plus the files that
:func:`structkd.runtime.load` reads (vocabulary, tokenizer, CRF constraints, decoder settings);
:mod:`structkd.export.graphs` holds the export-friendly wrappers around the models' own submodules.  Needs the
``[export]`` extra (onnx, onnxruntime).
"""

from structkd.export.onnx import EXPORT_TOLERANCE, export_model

__all__ = ["EXPORT_TOLERANCE", "export_model"]
