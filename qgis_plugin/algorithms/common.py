"""What the algorithms share: a base class, the feedback bridge, engine checks and error translation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from qgis.core import (
    Qgis,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterNumber,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt import sip

from ..deps import check_engine

DEVICE_OPTIONS = ["auto", "cuda", "cpu"]
ARCHITECTURES = ["unet_skinny", "unet_lessconv", "unet_short", "unet_base", "unet_tiny"]  # train choices


class FeedbackSink:
    """The progress sink of a Processing run: percent, cancel and log go to the feedback object."""

    def __init__(self, feedback: QgsProcessingFeedback | None) -> None:
        self.feedback = feedback

    def set_percent(self, percent: float) -> None:
        """Set the progress bar."""
        if self.feedback is not None:
            self.feedback.setProgress(percent)

    def is_cancelled(self) -> bool:
        """Return True once the user pressed Cancel."""
        return self.feedback is not None and self.feedback.isCanceled()

    def log(self, text: str) -> None:
        """Write a line to the algorithm's log (HTML: runs of spaces collapse, so tables come one line per row)."""
        if self.feedback is not None:
            self.feedback.pushInfo(text)


def require_engine(modules: dict[str, str]) -> None:
    """Raise a QgsProcessingException naming the missing packages and how to install them."""
    status = check_engine(modules)
    if not status.ok:
        raise QgsProcessingException(status.message())


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """Turn the engine's errors (plain sentences) into Processing errors; name settings as the dialog does."""
    from fastunet_core.errors import CancelledError, FastUNetError

    from ..words import in_qgis_words

    try:
        with in_qgis_words():
            yield
    except CancelledError as exc:
        text = str(exc)  # "cancelled; ..." or "interrupted ...": our own first word, capitalised alone (a file
        raise QgsProcessingException(text[:1].upper() + text[1:]) from exc  # name after it keeps its spelling)
    except FastUNetError as exc:
        raise QgsProcessingException(str(exc)) from exc


class ClassStyle(QgsProcessingLayerPostProcessorInterface):
    """Style outputs when Processing loads them: class raster palette with names, polygons from their .qml."""

    # Each output gets its own instance: the context owns (and deletes) the post-processor of every layer it
    # loads, so one instance handed to two outputs was deleted twice (QGIS crashed). The context owns the C++
    # side but not the Python wrapper, which must live as long as the context: kept here until QGIS deletes it.
    _alive: ClassVar[list[ClassStyle]] = []

    def __init__(self, below: str | None = None) -> None:
        super().__init__()
        self.below = below  # polygons: the class raster of the same run, which they must lie above

    def postProcessLayer(self, layer: Any, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> None:
        """Apply the class style to a loaded output layer."""
        from ..results import apply_palette, classes_from_raster, load_class_style

        source = layer.source().split("|")[0]
        if isinstance(layer, QgsRasterLayer):
            classes = classes_from_raster(source)
            if classes:
                apply_palette(layer, classes)
        elif isinstance(layer, QgsVectorLayer):
            load_class_style(layer, source)
            if self.below:
                _lift_above(layer, self.below, context)

    @classmethod
    def attach(cls, context: QgsProcessingContext, output: str, sort_key: int = 0, above: str | None = None,
               name: tuple[str, str] | None = None) -> None:
        """Style ``output`` if Processing is going to load it; keep it above the layer of ``above`` if given.

        The sort key orders the outputs when no layer is selected (the last inserted lands on top); with a
        layer selected, QGIS's dialog inserts each output above that layer in turn, which reverses the order:
        the post-processor then moves the polygons above the raster (:func:`_lift_above`).
        ``name``: (the output's description, the layer's name): a layer Processing would name after the
        output's description ("Class raster", the same on every run) is named after the input instead, as the
        dock names its layers ("ortho classes", "ortho classes (2)" for a second run). A name the user gave,
        and QGIS's setting that names layers after their files, are kept (Processing applies them when it
        loads the layer).
        """
        if context.willLoadLayerOnCompletion(output):
            details = context.layerToLoadOnCompletionDetails(output)
            details.layerSortKey = sort_key
            if name is not None and details.name in ("", name[0]):
                from ..results import unique_layer_name

                details.name = unique_layer_name(name[1], details.project or context.project())
            cls._alive = [p for p in cls._alive if not sip.isdeleted(p)]
            processor = cls(above)
            cls._alive.append(processor)
            context.layerToLoadOnCompletionDetails(output).setPostProcessor(processor)


def _lift_above(layer: QgsVectorLayer, raster_source: str, context: QgsProcessingContext) -> None:
    """Move ``layer``'s tree node just above the node of the raster loaded from ``raster_source``."""
    project = context.project() or QgsProject.instance()
    root = project.layerTreeRoot()
    node = root.findLayer(layer.id())
    raster = next((n for n in root.findLayers() if n.layer() is not None
                   and n.layer().source().split("|")[0] == raster_source), None)
    if node is None or raster is None or node.parent() is not raster.parent():
        return
    parent = node.parent()
    if parent.children().index(node) < parent.children().index(raster):
        return  # already above
    clone = node.clone()
    parent.insertChildNode(parent.children().index(raster), clone)
    parent.removeChildNode(node)


class FastUNetAlgorithm(QgsProcessingAlgorithm):
    """Base of the provider's algorithms."""

    def createInstance(self) -> QgsProcessingAlgorithm:
        """Return a fresh copy (Processing runs each in its own instance)."""
        return type(self)()

    def helpUrl(self) -> str:
        """Return the algorithm's section of the project's documentation (homepage from metadata.txt)."""
        from ..about import help_url

        return help_url(f"processing-{self.name()}")


def output_path(value: str) -> Path:
    """Return an output path from Processing, refusing memory layers (the engine writes files)."""
    if not value or value.startswith(("memory:", "ogr:", "postgres:", "postgis:", "spatialite:")):
        raise QgsProcessingException(f"the output must be a file (.tif, .gpkg, .shp or .geojson), got {value!r}")
    return Path(value)


def polygon_option_parameters(simplify: str, min_area: str, prefix: str = "") -> list[QgsProcessingParameterNumber]:
    """Return the simplify and minimum-area parameters, with the dock's defaults (AUTO: one pixel, two pixels).

    Segment raster and Vectorize class raster both declare them here, so their defaults cannot drift apart.
    """
    from ..jobs import AUTO

    double = Qgis.ProcessingNumberParameterType.Double
    return [QgsProcessingParameterNumber(simplify, f"{prefix}simplify tolerance (m, -1: one pixel)", double, AUTO,
                                         minValue=AUTO),
            QgsProcessingParameterNumber(min_area, f"{prefix}minimum area (m², -1: two pixels)", double, AUTO,
                                         minValue=AUTO)]
