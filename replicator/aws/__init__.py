"""AWS clients, created once per service and closed by its exit stack, and the lean HTTP transport of the hot paths."""
