"""Where changes go: the conditional last-writer-wins writer and the dead-letter destinations."""
