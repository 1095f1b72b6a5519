"""`python -m serving.server`, the same as `tfx-image-transfer-server --model-base-path DIR`."""

import sys

from serving.server.app import main

sys.exit(main())
