import sys

from .checkout import leave_checkout_off_path
from .cli import main

leave_checkout_off_path()
sys.exit(main())
