"""Convert a THUMOS14 folder between the Thumos14reduced and the per-video layout (``wstal.convert``).

    python examples/convert_thumos14.py --data-dir Thumos14reduced/ thumos_per_video/
    python examples/convert_thumos14.py --synthetic --max-videos 12 synthetic_per_video/

See ``python examples/convert_thumos14.py --help`` and docs/reproduce_thumos14.md.
"""

import sys

from wstal.convert import main

if __name__ == "__main__":
    sys.exit(main())
