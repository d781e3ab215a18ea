from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "users"

    def ready(self) -> None:
        # Signal receivers: the per-address sign-in throttle and the security event log.
        from users import audit, throttle  # noqa: F401
