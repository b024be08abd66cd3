import sys

from provision.installer.main import main

sys.exit(main())
