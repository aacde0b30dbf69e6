"""The judge's errors, below every judge module: the client raises them, the registry's checks raise
them, the stages and the CLI catch them (each message names the server, the model and why)."""


class JudgeError(RuntimeError):
    """The judge could not answer (the message says which server, model and why)."""


class JudgeUnavailable(JudgeError):
    """The judge server is down, unreachable, or kept failing after all retries."""


class JudgeFailed(JudgeUnavailable):
    """One request kept failing (timeouts, 429, 5xx, malformed replies) after all its retries."""
