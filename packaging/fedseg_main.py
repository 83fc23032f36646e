"""The script PyInstaller freezes: everything it does is in app/frozen.py."""

import sys

from app.frozen import main

if __name__ == "__main__":
    sys.exit(main())
