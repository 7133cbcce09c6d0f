"""The REST service: FastAPI app factory, routes, schemas, settings, auth and live writes.

Example:
    >>> from cormorant.service import create_app, load_settings  # doctest: +SKIP
    >>> app = create_app(load_settings("service.yaml"))  # doctest: +SKIP
"""

from cormorant.service.app import create_app
from cormorant.service.settings import ServiceSettings, load_settings

__all__ = ["ServiceSettings", "create_app", "load_settings"]
