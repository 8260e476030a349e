"""The image folder: scanning it into an index, decoding images, the demo digits."""
