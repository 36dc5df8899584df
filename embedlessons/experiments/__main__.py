"""``python -m embedlessons.experiments {list, run}``: the book's recorded experiments."""
import sys

from embedlessons.recorded import main

sys.exit(main())
