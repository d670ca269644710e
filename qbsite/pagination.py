"""Pagination for the API. Time series use cursors (stable under inserts, no COUNT)."""

from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000


class TimeCursorPagination(pagination.CursorPagination):
    page_size = 500
    page_size_query_param = "page_size"
    max_page_size = 5000
    ordering = "-time"
