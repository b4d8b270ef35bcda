"""Pure window math: the tile grid over a raster and the streaming stitcher of tile outputs."""
