"""The HTTP API (docs/architecture.md): ``router`` (routing, the error model), ``http`` (the one
serving path), ``core`` (core routes), ``openapi``; ``app`` assembles every subsystem's routes."""
