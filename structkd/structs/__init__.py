"""Structured distributions: exact dynamic programs over chains, segmentations and dependency trees."""

from structkd.structs.base import StructuredDistribution
from structkd.structs.chain import LinearChainCRF, MaxEnt
from structkd.structs.heads import arc_indicators, is_tree, projective
from structkd.structs.semimarkov import SemiMarkovCRF, chart_to_segments, segments_to_chart
from structkd.structs.tree import DependencyCRF, MatrixTree
from structkd.structs.tree2o import Dependency2oCRF

__all__ = [
    "StructuredDistribution", "LinearChainCRF", "MaxEnt", "SemiMarkovCRF", "chart_to_segments", "segments_to_chart",
    "DependencyCRF", "MatrixTree", "Dependency2oCRF", "arc_indicators", "is_tree", "projective",
]
