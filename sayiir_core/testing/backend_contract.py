"""``BackendContract``: every behaviour of the ``Backend`` protocol, as pytest tests.

The tests live in four parts (instances and claims; commits, control and signals;
listing, history and ``reset_from``; the bound on buffered signals) so each module
stays readable; this class joins them. Subclass it, or ``BackendSuite`` for the whole
contract, and define ``make_backend``.
"""

from __future__ import annotations

from sayiir_core.testing._backend_commits import CommitsControlAndSignalsContract
from sayiir_core.testing._backend_history import ListingHistoryAndResetContract
from sayiir_core.testing._backend_instances import InstancesAndClaimsContract
from sayiir_core.testing._backend_signal_bound import SignalBoundContract


class BackendContract(
    InstancesAndClaimsContract,
    CommitsControlAndSignalsContract,
    ListingHistoryAndResetContract,
    SignalBoundContract,
):
    """The ``Backend`` protocol's contract: create and conflict policies, reads, claims
    and leases, fenced commits, cancel/pause/unpause, signals and their bound, listing,
    history and ``reset_from``.

    Needs a ``make_backend`` fixture (see ``sayiir_core.testing``)::

        class TestMyBackend(BackendContract):
            @pytest.fixture
            def make_backend(self, tmp_path):
                return lambda: MyBackend(tmp_path / "flows.db")
    """
