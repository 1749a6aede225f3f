import sys

from vision_kd.cli import main

sys.exit(main())
