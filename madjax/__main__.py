import sys

from madjax.cli import main

sys.exit(main())
