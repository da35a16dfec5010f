"""The one exception type the stages raise for bad input; the CLIs print it as one line."""


class PipelineError(Exception):
    """An expected failure caused by input (data, config, arguments): say what and how to fix."""
