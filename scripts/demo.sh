#!/usr/bin/env bash
# The README's main job, on bundled data (SpaceNet chip + its building polygons, CC BY-SA 4.0):
# train a small UNet with the JDT loss on CPU (7-13 CPU-minutes; more wall time on a busy machine), segment the chip, vectorise the buildings,
# and draw the result with the reference polygons on top.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=out/demo
mkdir -p "$OUT"
$BIN/fastunet-geo train -c training/demo_spacenet.yaml --output "$OUT/run" --fresh
$BIN/fastunet-geo predict data/samples/spacenet_atlanta_pan.tif -m "$OUT/run/best.safetensors" \
  -o "$OUT/buildings.tif" --probs "$OUT/buildings_probs.tif" --overwrite
$BIN/fastunet-geo vectorize "$OUT/buildings.tif" -o "$OUT/building_polygons.gpkg" --min-area 4 --simplify 0.5 --overwrite
$BIN/python - <<PY
from fastunet_core.io.preview import render_preview
print(render_preview("data/samples/spacenet_atlanta_pan.tif", "$OUT/buildings.tif", "$OUT/preview.png",
                     title="SpaceNet chip: predicted buildings (red), reference polygons (yellow)",
                     outlines="data/samples/spacenet_atlanta_buildings.geojson"))
PY
echo "demo outputs in $OUT: run/ (checkpoints, curves.png), buildings.tif (+ .qml), building_polygons.gpkg (style inside), preview.png"
