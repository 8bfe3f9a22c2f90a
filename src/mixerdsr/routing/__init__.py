"""Routing: which expert each environment's context goes to, and how that changes in training.

- the ``[gate]`` table (:class:`GateSettings`);
- Algorithm 1's and Algorithm 2's pieces as pure, jittable functions (``_algorithm1``);
- the gate's update inside the compiled training step, one object per kind
  (:class:`LeastSquaresGate`, :class:`GradientGate`, :class:`FrozenGate`);
- the host-side policy the trainer consults between steps (:class:`FromStart`,
  :class:`WarmStart` with a :class:`FixedCount` or :class:`ChosenCount` grouping), its state
  kept in the checkpoint;
- grouping contexts on the host (seeding, the number of experts) and the changes of the
  routing structure (:func:`reroute`, :func:`restart_experts`).
"""

from ._algorithm1 import DEGENERATE as DEGENERATE
from ._algorithm1 import INACTIVE_BIAS as INACTIVE_BIAS
from ._algorithm1 import OK as OK
from ._algorithm1 import RESEEDED as RESEEDED
from ._algorithm1 import SKIPPED_EMPTY as SKIPPED_EMPTY
from ._algorithm1 import STATUS_NAMES as STATUS_NAMES
from ._algorithm1 import GateState as GateState
from ._algorithm1 import KMeansResult as KMeansResult
from ._algorithm1 import active_from_gate as active_from_gate
from ._algorithm1 import cluster_medians as cluster_medians
from ._algorithm1 import fit_gate as fit_gate
from ._algorithm1 import gate_init as gate_init
from ._algorithm1 import greedy_pairing as greedy_pairing
from ._algorithm1 import init_centroids as init_centroids
from ._algorithm1 import kmeans as kmeans
from ._algorithm1 import overlap_pairing as overlap_pairing
from ._algorithm1 import reassign_targets as reassign_targets
from ._grouping import auto_neighbours as auto_neighbours
from ._grouping import choose_count as choose_count
from ._grouping import compact_labels as compact_labels
from ._grouping import eigengap_count as eigengap_count
from ._grouping import laplacian_spectrum as laplacian_spectrum
from ._grouping import seed_routes as seed_routes
from ._grouping import silhouette as silhouette
from ._grouping import spectral_embedding as spectral_embedding
from ._policies import ChosenCount as ChosenCount
from ._policies import FixedCount as FixedCount
from ._policies import FromStart as FromStart
from ._policies import Grouping as Grouping
from ._policies import RouteEvent as RouteEvent
from ._policies import RoutingPolicy as RoutingPolicy
from ._policies import WarmStart as WarmStart
from ._policies import auto_warmup as auto_warmup
from ._policies import policy_of as policy_of
from ._policies import settings_for_active as settings_for_active
from ._settings import GateSettings as GateSettings
from ._settings import WarmStartSettings as WarmStartSettings
from ._surgery import fresh_moments as fresh_moments
from ._surgery import own_contexts as own_contexts
from ._surgery import reroute as reroute
from ._surgery import restart_experts as restart_experts
from ._updates import FrozenGate as FrozenGate
from ._updates import GateUpdate as GateUpdate
from ._updates import GradientGate as GradientGate
from ._updates import LeastSquaresGate as LeastSquaresGate
from ._updates import gate_update_of as gate_update_of
