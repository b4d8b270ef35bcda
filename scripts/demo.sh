#!/usr/bin/env bash
# The README's main job on bundled data: make a model checkpoint, segment an aerial image, draw the result.
# (Until training lands, the model is untrained: the pipeline is real, the classes are not meaningful yet.)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=out/demo
mkdir -p "$OUT"
$BIN/fastunet-geo init unet_tiny --classes "background,building=#e31a1c,woodland=#33a02c,water=#1f78b4,road=#ffff99" \
  --tile 256 --overlap 32 -o "$OUT/model.safetensors" --overwrite
$BIN/fastunet-geo info "$OUT/model.safetensors"
$BIN/fastunet-geo predict data/samples/cogeo.tif -m "$OUT/model.safetensors" -o "$OUT/classes.tif" \
  --probs "$OUT/probs.tif" --overwrite
$BIN/python -c "from fastunet_core.preview import render_preview as r; print(r('data/samples/cogeo.tif', '$OUT/classes.tif', '$OUT/preview.png', title='cogeo.tif, untrained unet_tiny'))"
echo "demo outputs in $OUT: classes.tif (class map), probs.tif (per-class %), preview.png"
