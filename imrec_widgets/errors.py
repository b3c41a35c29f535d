"""Every exception and warning the package raises on purpose, in one module every layer imports.

Each error derives from ``ImrecError`` and from the built-in it always was (``ValueError``,
``RuntimeError``), so ``except ImrecError`` catches them all and ``except ValueError`` still works.
"""

from __future__ import annotations


class ImrecError(Exception):
    """Base of the errors imrec-widgets raises for what a user can cause or fix."""


class UsageError(ImrecError, ValueError):
    """A call or command that cannot run as asked: a value it does not accept (an unknown mode,
    metric, feature or setting, bad weights or ``k``, an id the index does not hold), or an
    index state the message says how to fix."""


class NotFoundError(ImrecError, FileNotFoundError):
    """A file or folder named by the user that does not exist."""


class UnknownImageError(ImrecError, KeyError):
    """An image id the catalog does not hold (or holds as removed or unreadable)."""

    def __str__(self) -> str:
        # KeyError's str() quotes its message; this one is a sentence
        return str(self.args[0]) if self.args else ""


class IndexConfigError(ImrecError, ValueError):
    """The index on disk was built with other settings than the ones asked for."""


class IndexLockedError(ImrecError, RuntimeError):
    """Another process is writing to this index."""


class IndexReadOnlyError(ImrecError, RuntimeError):
    """The index is on a read-only folder or mount: it can be searched, not written."""


class IndexFileError(ImrecError, RuntimeError):
    """A file or folder of the index is a link (symbolic or hard) or not a plain one: it is
    never written through, so a planted link cannot redirect a write out of the index folder."""


class EmptyIndexError(ImrecError, ValueError):
    """The index holds no searchable images yet."""


class ImageDecodeError(ImrecError, ValueError):
    """A file or buffer that is not a readable image (or one refused as too large)."""

    query_position: int | None = None
    """Raised by a search: which item of its query could not be decoded (0 for the first)."""


class ProjectionError(ImrecError, ValueError):
    """A map that cannot be made or read (feature missing, too few images, not computed yet)."""


class MoveError(ImrecError, ValueError):
    """A duplicate clean-up that cannot run as asked (bad destination or keeper, nothing to undo)."""


class MapMessageError(ImrecError, ValueError):
    """A message from the front end that is not one the map layer understands."""


class MalformedMessage(ImrecError, ValueError):
    """A message from the search widget's front end that no honest one sends (``SearchWidget.rejected`` counts them)."""


class WeightsUnavailableError(ImrecError, RuntimeError):
    """Pretrained weights for the requested backbone cannot be found or fetched."""


class EngineUnavailableError(ImrecError, RuntimeError):
    """An engine cannot run here (package missing or broken, graph not exportable or loadable)."""


class TagError(ImrecError, ValueError):
    """A tag name that is not allowed, or a selection to tag that names no usable image."""


class ExportError(ImrecError, RuntimeError):
    """Files that cannot be exported where asked (destination refused, disk full, no links)."""


class ImrecWarning(UserWarning):
    """Base of the warnings imrec-widgets gives (filter them all with this class)."""


class AnnWarning(ImrecWarning):
    """The ANN index was not used (missing extra, stale or damaged file); searched exactly."""


class EngineFallbackWarning(ImrecWarning):
    """An ONNX engine could not be used; the embedding runs on torch instead."""


class IndexBusyWarning(ImrecWarning):
    """``update()`` did not run: another process was still updating the index when it gave up waiting."""


class QuantizerMismatchWarning(ImrecWarning):
    """The stored quantizer does not fit the feature; a fresh one was trained in memory."""


class DerivedFileWarning(ImrecWarning):
    """A derived file (re-rank copy, cached ONNX graph, map placement) did not match what it was
    made from; it was made again or not used, and the answer is the exact one."""


class IndexDataWarning(ImrecWarning):
    """A value read from the index folder that this code never writes (a catalog path leading
    out of the collection, a malformed stamp or log row) was not used."""


class SettingError(ImrecError, ValueError):
    """An ``IMREC_*`` environment variable holds a value that is not a setting."""


__all__ = [
    "AnnWarning",
    "DerivedFileWarning",
    "EmptyIndexError",
    "EngineFallbackWarning",
    "EngineUnavailableError",
    "ExportError",
    "ImageDecodeError",
    "ImrecError",
    "ImrecWarning",
    "IndexBusyWarning",
    "IndexConfigError",
    "IndexDataWarning",
    "IndexFileError",
    "IndexLockedError",
    "IndexReadOnlyError",
    "MalformedMessage",
    "MapMessageError",
    "MoveError",
    "NotFoundError",
    "ProjectionError",
    "QuantizerMismatchWarning",
    "SettingError",
    "TagError",
    "UnknownImageError",
    "UsageError",
    "WeightsUnavailableError",
]
