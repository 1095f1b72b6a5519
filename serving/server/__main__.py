"""python -m serving.server --model-base-path DIR [--model-config-file FILE] ..."""

import sys

from serving.server.app import main

sys.exit(main())
