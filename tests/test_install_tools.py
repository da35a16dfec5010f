"""scripts/install-test-tools.sh, which the CI workflows call before the tests: it is here,
not among the monitoring tests, as a project without the monitoring stack keeps it (wrk and
qemu-user serve the benchmarks)."""

from __future__ import annotations

from helpers import ROOT, run


def test_the_install_script_refuses_an_unknown_package_in_one_line() -> None:
    script = str(ROOT / "scripts" / "install-test-tools.sh")
    proc = run(["bash", script, "prometheus", "grafana"], ROOT, check=False)
    assert proc.returncode == 2 and "unknown package 'grafana'" in proc.stderr
