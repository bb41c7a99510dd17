"""The broker daemon: trio server, partitions, request handlers, coordinator."""
