"""Dataset readers for real layouts, synthetic generators, codecs and image I/O."""
