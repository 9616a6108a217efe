"""The ``/api/v1`` routers; routes stay thin and call the services below."""
