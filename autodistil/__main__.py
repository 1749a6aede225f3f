"""``python -m autodistil`` (also ``accelerate launch -m autodistil``)."""

import sys

from autodistil.cli import main

sys.exit(main())
