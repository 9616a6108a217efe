"""``reelrank serve api``: run the HTTP API with uvicorn."""

from __future__ import annotations

import typer


def register(groups: dict[str, typer.Typer]) -> None:
    @groups["serve"].command("api")
    def serve_api(
        host: str = typer.Option("127.0.0.1", help="Bind address."),
        port: int = typer.Option(8000, help="Port."),
        workers: int = typer.Option(1, min=1, help="uvicorn worker processes."),
    ) -> None:
        """Serve /api/v1 on embedded defaults or the configured backends."""
        import uvicorn

        from core.config import get_settings
        from platform_services.storage.db import migrate

        migrate(get_settings().database_url)
        uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers)
