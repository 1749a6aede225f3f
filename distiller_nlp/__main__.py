"""``python -m distiller_nlp`` (also ``accelerate launch -m distiller_nlp``)."""

import sys

from distiller_nlp.cli import main

sys.exit(main())
