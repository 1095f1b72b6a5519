"""`tfx-image-transfer-server` as a module (the tests start it with `python -m serving.server`)."""

import sys

from serving.server.app import main

sys.exit(main())
