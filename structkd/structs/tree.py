"""First-order dependency trees, one module per algorithm: projective trees by Eisner's algorithm
(:class:`DependencyCRF`, :mod:`structkd.structs.eisner`), non-projective trees by the Matrix-Tree theorem
(:class:`MatrixTree`, :mod:`structkd.structs.matrix_tree`), over the shared base and conventions of
:mod:`structkd.structs.first_order` (scores ``[batch_size, seq_len, seq_len]`` with ``scores[b, d, h]`` the arc
``h -> d``, position 0 the root; heads ``LongTensor [batch_size, seq_len]``)."""

from structkd.structs.eisner import DependencyCRF, nearest_projective
from structkd.structs.first_order import FirstOrderTree, arc_mask, tree_scores
from structkd.structs.matrix_tree import MARGINAL_TOLERANCE, MatrixTree

__all__ = ["DependencyCRF", "FirstOrderTree", "MatrixTree", "MARGINAL_TOLERANCE", "arc_mask", "nearest_projective",
           "tree_scores"]
