import sys

from faceserve.cli import main

sys.exit(main())
