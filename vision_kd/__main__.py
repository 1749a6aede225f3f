"""``python -m vision_kd`` (also ``accelerate launch -m vision_kd``)."""

import sys

from vision_kd.cli import main

sys.exit(main())
