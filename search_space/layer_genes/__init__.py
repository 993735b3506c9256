"""The layer genes a space may give some layers and not others, in their genome order."""

from search_space.layer_genes.base import LayerGene, arch_values
from search_space.layer_genes.boundary import BOUNDARY, factor_of, has_boundaries
from search_space.layer_genes.width import WIDTH

LAYER_GENES: tuple[LayerGene, ...] = (WIDTH, BOUNDARY)
GENE_KEYS = tuple(gene.key for gene in LAYER_GENES)

__all__ = ["LAYER_GENES", "GENE_KEYS", "LayerGene", "arch_values", "BOUNDARY", "WIDTH", "factor_of",
           "has_boundaries"]
