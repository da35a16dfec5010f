"""Imported last by the joblib launcher's fork server (`sweep.TRIAL_MODULES`), once a trial's
modules are loaded: moves them into the collector's permanent generation. The workers forked
from it then neither traverse them in each full collection nor copy their pages when the
collector touches them, and the server itself exits at once instead of spending 2 to 3 s
collecting torch's and Lightning's objects (with the sweep's output held open meanwhile)."""

import gc

gc.freeze()
