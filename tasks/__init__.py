"""Units of work as plain functions: acquire, probe, extract audio, label, crop, align, shard.

Import-order note: decord's wheel bundles its own zlib 1.2.3.  When decord
is loaded before OpenCV, OpenCV's PNG *decoder* binds to that zlib and fails
("libpng error: bad parameters to zlib"); encoding is unaffected.  Loading
cv2 first here avoids it for everything under ``tasks``, and
:func:`tasks.media.decode.decode_image` decodes with Pillow so readers of the shards
are safe whatever they imported first.
"""

import cv2  # noqa: F401  (must precede any decord import; see above)
