"""platform_services."""
