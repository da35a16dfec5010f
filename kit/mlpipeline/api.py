"""What a project's own code (src/) may import from the kit, and nothing else: the error that
stops a stage with one line; the base class of a data source, the kit's sources to build
on, and what a source's `load` returns; timm's networks with their weights loaded. Everything
else of the kit may change from one version to the next (CHANGELOG.md)."""

from mlpipeline.data.images import ImageFolder
from mlpipeline.data.sources import Dataset, Digits, Source, Table, TableFile
from mlpipeline.errors import PipelineError
from mlpipeline.models.pretrained import timm_network

__all__ = [
    "Dataset",
    "Digits",
    "ImageFolder",
    "PipelineError",
    "Source",
    "Table",
    "TableFile",
    "timm_network",
]
