#!/usr/bin/env python
"""Run a (distilled) student on images, folders or videos: pictures with its detections and a COCO results list.

    python tools/predict.py --config-file configs/shapes/distill/dcd.yaml \
        --weights output/demo/dcd/model_final.pth --input datasets/shapes/val/images --output predictions/ \
        [KEY VALUE ...]

Writes OUTPUT/<name>.jpg per image and OUTPUT/<stem>.mp4 per video (drawn with Detectron2's Visualizer, class
names from the config's first test set), and OUTPUT/detections.json: image_id (1-based, in input order),
file_name, category_id (the dataset's ids where its metadata maps them), category_name, bbox [x, y, w, h], score
(+ segmentation RLE for Mask R-CNN, + frame for videos). A distillation config runs its student only: no teacher
is built or needed. KEY VALUE overrides such as MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.5 or MODEL.DEVICE cpu apply.
"""
import argparse
import sys

import kd_det  # noqa: F401
from kd_det.errors import UserError


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the config the weights were trained with")
    p.add_argument("--weights", required=True, help="checkpoint (train_net.py's or export_student.py's .pth)")
    p.add_argument("--input", required=True, nargs="+", help="images, videos or folders of them")
    p.add_argument("--output", required=True, help="folder for the pictures, videos and detections.json")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    a = p.parse_args(argv)
    from kd_det.detection.predict import predict

    try:
        detections = predict(a.config_file, a.weights, a.input, a.output, a.opts)
    except UserError as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(detections)} detections: {a.output}/detections.json, pictures and videos in {a.output}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
