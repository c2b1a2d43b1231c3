"""The unified protocol as plain data and pure functions: no trio, no sockets, no clock
reads (time is always an argument)."""
