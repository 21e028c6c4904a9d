from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connects the receivers that announce new blogs.
        # Registers the scrape-time collectors of live connections and of the hub, so /metrics
        # shows them in every process, whether or not anyone has subscribed there yet.
        from notifications.hub import hub  # noqa: F401
        from notifications.publishing import signals  # noqa: F401

        # Connects the receiver that announces ended credentials to every instance.
        from notifications.transports import (
            connections,  # noqa: F401
            revocation,  # noqa: F401
        )
