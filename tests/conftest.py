"""Fixtures shared by the whole suite."""

from etcd_fixture import etcd_prefix, etcd_server, fresh_etcd_server  # noqa: F401  (pytest fixtures)
