from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Import what wires itself up on import, once the app registry is ready.

        - publishing.signals: the receivers that announce new blogs;
        - transports.revocation: the receiver that announces ended credentials to every instance;
        - hub.hub, transports.connections: the scrape-time collectors of the hub and of the live
          connections, so /metrics shows them in every process, subscribed to or not;
        - runtime.shutdown: the SIGTERM drain (armed under Daphne by the first connection).
        """
        from notifications.hub import hub  # noqa: F401
        from notifications.publishing import signals  # noqa: F401
        from notifications.runtime import shutdown  # noqa: F401
        from notifications.transports import connections, revocation  # noqa: F401
