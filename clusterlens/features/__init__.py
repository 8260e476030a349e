"""Image and text features: backbones, extraction and its store, precision, sharding, captions, fusion."""
