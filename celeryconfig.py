"""Celery's configuration module (``app.config_from_object("celeryconfig")``).

Every value comes from Chordal's settings (``CHORDAL_*`` variables) through
:func:`workers.config.celery_config`. Without a broker URL this raises ConfigurationError, so a
worker never falls back to Celery's default of a RabbitMQ on localhost.
"""

from workers.config import celery_config
from workers.settings import get_settings

globals().update(celery_config(get_settings()))
