"""Type stub of fastnn/_build_info.py, which setup.py generates at build time (not in git): how
the extensions were compiled, printed by ``fastnn.show_config()``."""
from typing import Any

BUILD_INFO: dict[str, Any]
