import sys

from osteo_batch.cli.main import main

sys.exit(main())
