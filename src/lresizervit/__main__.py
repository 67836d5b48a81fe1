import sys

from lresizervit.cli import main

sys.exit(main())
