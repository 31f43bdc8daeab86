import sys

from mailplane.cli import main

sys.exit(main())
