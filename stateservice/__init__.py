"""stateservice: named state machines ("charts") served over HTTP, kept in Redis."""

__version__ = "0.5.1"
