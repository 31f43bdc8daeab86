"""DRF limit/offset pagination, as the service uses: {count, next, previous, results}."""

from rest_framework import pagination


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    default_limit = 100
    max_limit = 1000
