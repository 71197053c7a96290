import sys

from qpm.cli import main

sys.exit(main())
