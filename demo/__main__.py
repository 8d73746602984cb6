"""`python -m demo` is the same as `python -m demo.app`."""
import sys

from demo.app import main

sys.exit(main())
