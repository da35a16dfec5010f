"""Checks `dvc exp run -S` overrides before DVC composes conf/ with them.

With `hydra.enabled`, DVC composes conf/ and writes params.yaml in its own process, where no
code of this project runs otherwise; first it imports the modules of the `hydra_plugins`
package under `hydra.plugins_path` (.dvc/config: .dvc/plugins), this one among them. It makes
that composition check the overrides as the project's own entry points do
(mlpipeline.config.guard): a `_target_` outside allowed_targets or a resolver such as
`${oc.env:VAR}` stops `dvc exp run` with one line, params.yaml as it was. A folder of its own,
so that no other process (a stage, a test) ever loads it.
"""

from dvc.exceptions import InvalidArgumentError

try:
    from mlpipeline.config.guard import guard_compositions
except ImportError as err:
    # raised on, an ImportError would be only a warning of Hydra's plugin scan and the
    # overrides unchecked: refuse every composition instead
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    problem = (
        f"the -S overrides cannot be checked ({err}): run the project's own dvc "
        "(`make install`, then .venv/bin/dvc)"
    )

    def _refuse(*args: object, **kwargs: object) -> None:
        raise InvalidArgumentError(problem)

    ConfigLoaderImpl.load_configuration = _refuse  # type: ignore[method-assign,assignment]
else:
    guard_compositions(InvalidArgumentError)
