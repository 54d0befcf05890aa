"""The dataset mapper of every kd_det detection loader: Detectron2's ``DatasetMapper``, with an image that
cannot be decoded named in one sentence.

Every format (COCO json, Pascal VOC, YOLO, LVIS) lists its images by path and leaves the decoding to the
mapper, which reads each image when a batch is drawn (Detectron2's ``detection_utils.read_image``). An
undecodable file (random bytes, a truncated JPEG, an HTML page saved as .jpg) made Detectron2 raise PIL's
``UnidentifiedImageError`` / ``OSError`` with a traceback; :class:`CheckedDatasetMapper` turns it into a
:class:`~kd_det.errors.DatasetError` naming the file, so the run stops with that sentence (exit 2 from the
tools, also out of a DataLoader worker: see :class:`~kd_det.errors.UserError`). It never skips the image:
what is trained on and scored is what the annotations list.
"""
from detectron2.data import DatasetMapper

from ...errors import DatasetError

__all__ = ["CheckedDatasetMapper", "undecodable_image"]


def undecodable_image(path, error, dataset=None):
    """The one sentence for an image that cannot be decoded (``error``: what the decoder raised)."""
    of = f" of dataset '{dataset}'" if dataset else ""
    # PIL ends "cannot identify image file" with the path, or the repr of the file object read_image opened
    why = str(error).split(" <_io.", 1)[0].replace(f" {str(path)!r}", "")
    return DatasetError(f"Image {path}{of} cannot be decoded ({type(error).__name__}: {why}).")


class CheckedDatasetMapper(DatasetMapper):
    """Detectron2's ``DatasetMapper`` (same config keys, ``CheckedDatasetMapper(cfg, is_train)``); an image
    that cannot be read or decoded raises :func:`undecodable_image`."""

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except (OSError, SyntaxError) as e:
            # The mapper's only file read is read_image's: PIL raises UnidentifiedImageError (an OSError) for
            # bytes it does not recognise, OSError for truncated data and SyntaxError for some broken headers.
            raise undecodable_image(dataset_dict["file_name"], e) from None
