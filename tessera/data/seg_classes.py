"""Class names of the public segmentation sets, in label order (label ``i`` is ``NAMES[i]``
after ``reduce_zero_label`` for ADE20K), and the colour palette of the overlays."""

from __future__ import annotations

import numpy as np

ADE20K = tuple(
    "wall|building|sky|floor|tree|ceiling|road|bed|windowpane|grass|cabinet|sidewalk|person|earth|door|table|"
    "mountain|plant|curtain|chair|car|water|painting|sofa|shelf|house|sea|mirror|rug|field|armchair|seat|fence|"
    "desk|rock|wardrobe|lamp|bathtub|railing|cushion|base|box|column|signboard|chest of drawers|counter|sand|sink|"
    "skyscraper|fireplace|refrigerator|grandstand|path|stairs|runway|case|pool table|pillow|screen door|stairway|"
    "river|bridge|bookcase|blind|coffee table|toilet|flower|book|hill|bench|countertop|stove|palm|kitchen island|"
    "computer|swivel chair|boat|bar|arcade machine|hovel|bus|towel|light|truck|tower|chandelier|awning|streetlight|"
    "booth|television receiver|airplane|dirt track|apparel|pole|land|bannister|escalator|ottoman|bottle|buffet|"
    "poster|stage|van|ship|fountain|conveyer belt|canopy|washer|plaything|swimming pool|stool|barrel|basket|"
    "waterfall|tent|bag|minibike|cradle|oven|ball|food|step|tank|trade name|microwave|pot|animal|bicycle|lake|"
    "dishwasher|screen|blanket|sculpture|hood|sconce|vase|traffic light|tray|ashcan|fan|pier|crt screen|plate|"
    "monitor|bulletin board|shower|radiator|glass|clock|flag".split("|")
)

VOC = tuple(
    "background|aeroplane|bicycle|bird|boat|bottle|bus|car|cat|chair|cow|diningtable|dog|horse|motorbike|person|"
    "pottedplant|sheep|sofa|train|tvmonitor".split("|")
)

CITYSCAPES = tuple(
    "road|sidewalk|building|wall|fence|pole|traffic light|traffic sign|vegetation|terrain|sky|person|rider|car|"
    "truck|bus|train|motorcycle|bicycle".split("|")
)

assert len(ADE20K) == 150 and len(VOC) == 21 and len(CITYSCAPES) == 19


def palette(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` uint8 colours: the PASCAL VOC colour map (the bits of the class
    index spread over the high bits of R, G and B), which gives every class its own colour
    and class 0 black."""
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for c in range(num_classes):
        label, r, g, b = c, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (label & 1) << shift
            g |= ((label >> 1) & 1) << shift
            b |= ((label >> 2) & 1) << shift
            label >>= 3
        colours[c] = (r, g, b)
    return colours
