"""The client library: connections, producer, consumer, admin, sync facade."""
