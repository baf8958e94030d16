"""Every field name used in gnnpot, with its shape and unit.

Shapes use ``num_atoms`` (N), ``num_edges`` (E), ``num_frames`` (B, one per structure in a batch)
and ``num_triplets`` (T).

Edge convention (written down once, used everywhere):
    ``edge_index[0]`` is the centre atom ``i`` (the receiver: messages are summed there) and
    ``edge_index[1]`` is the neighbour ``j`` (the sender). The edge vector points from ``i`` to
    ``j``'s periodic image::

        edge_vec = pos[j] - pos[i] + edge_shift @ cell

    This is the order of ``ase.neighborlist.neighbor_list`` and NequIP. PyG's ``MessagePassing``
    defaults to the opposite order, so layers that use it set ``flow="target_to_source"``.

Pair convention (an optimisation, never required):
    gnnpot's neighbour lists emit edge ``2k + 1`` as edge ``2k`` reversed (``i`` and ``j``
    swapped, shift negated), and batching keeps that. ``ForceField`` checks whether a graph is
    paired and then sets ``edge_paired``: layers compute what depends on the edge length alone
    (radial bases, filters, radial MLPs) on the even edges only and share it with the odd ones,
    which halves their cost. Graphs from elsewhere simply take the unpaired path.

Triplet convention (for angular layers):
    A triplet ``t`` joins two edges that share an atom: ``triplet_kj[t]`` is the edge ``j -> k``
    (centre ``j``) whose message flows into edge ``triplet_ji[t]``, the edge ``i -> j`` (centre
    ``i``). The angle is taken at ``j`` between ``j -> i`` and ``j -> k``. The edge going straight
    back (``k == i`` in the same periodic image) is never part of a triplet.
"""

from typing import Final

# --- structure ------------------------------------------------------------------------------
ATOMIC_NUMBERS: Final = "z"  # [N] int64, atomic number
POSITIONS: Final = "pos"  # [N, 3] float, Å (Cartesian)
CELL: Final = "cell"  # [B, 3, 3] float, Å, rows are lattice vectors (zeros when not periodic)
PBC: Final = "pbc"  # [B, 3] bool, periodic along each lattice vector
NUM_ATOMS: Final = "natoms"  # [B] int64, atoms per frame
BATCH: Final = "batch"  # [N] int64, frame index of each atom (PyG's own key)
TOTAL_CHARGE: Final = "total_charge"  # [B] float, e, net charge of each frame (atoms.info "charge", else 0)
CHARGES: Final = "charges"  # [N] float, e, fixed atomic charges (ASE "initial_charges"), only when given

# --- graph (from the neighbour list, no gradients) ----------------------------------------
EDGE_INDEX: Final = "edge_index"  # [2, E] int64, row 0 centre i, row 1 neighbour j
EDGE_SHIFT: Final = "edge_shift"  # [E, 3] int64, integer lattice translation of j's image
TRIPLET_KJ: Final = "triplet_kj_index"  # [T] int64, edge index j -> k (incremented by E)
TRIPLET_JI: Final = "triplet_ji_index"  # [T] int64, edge index i -> j (incremented by E)

# --- geometry (computed inside the model so autograd reaches pos and strain) ---------------
EDGE_VEC: Final = "edge_vec"  # [E, 3] float, Å, pos[j] - pos[i] + shift @ cell
EDGE_LEN: Final = "edge_len"  # [E] float, Å
SPECIES: Final = "species"  # [N] int64, index of z in the model's element list
EDGE_PAIRED: Final = "edge_paired"  # Python bool, edges follow the pair convention (set by ForceField)

# --- host facts (Python values a graph builder may attach so the model needs no device-to-host sync) --
PAIRED_EDGES: Final = "paired_edges"  # bool: the edges follow the pair convention (else ForceField checks)
ELEMENTS_CHECKED: Final = "elements_checked"  # bool: every atomic number is one the model knows
ANY_PERIODIC: Final = "any_periodic"  # bool: some frame is periodic in some direction (stress wanted)

# --- long-range head (gnnpot.nn.long_range: built by its prepare, no gradients) --------------
COULOMB_PAIRS: Final = "coulomb_pairs"  # [2, P] int64, each pair (i, j) of the real-space sum once
COULOMB_SHIFT: Final = "coulomb_shift"  # [P, 3] int64, lattice translation of j's image
COULOMB_PERIODIC: Final = "coulomb_periodic"  # [P] bool, the pair's frame is periodic (Ewald real space)
KVECTORS: Final = "kvectors"  # [K, 3] int64, reciprocal-lattice vectors n, k = 2 pi n @ inv(cell).T, half space
KVECTOR_FRAME: Final = "kvector_frame"  # [K] int64, frame of each k-vector (sorted)

# --- dispersion term (gnnpot.nn.dispersion: built by its prepare, no gradients) -------------
D3_PAIRS: Final = "d3_pairs"  # [2, P] int64, each pair (i, j) within the D3 cutoff once
D3_SHIFT: Final = "d3_shift"  # [P, 3] int64, lattice translation of j's image

# --- labels and per-frame loss weights ------------------------------------------------------
ENERGY: Final = "energy"  # [B] float, eV, total potential energy
FORCES: Final = "forces"  # [N, 3] float, eV/Å
STRESS: Final = "stress"  # [B, 3, 3] float, eV/Å³, ASE sign: (1/V) dE/d(strain), + = tensile
ATOMIC_ENERGY: Final = "atomic_energy"  # [N] float, eV, per-atom energies (model output)
ENERGY_WEIGHT: Final = "energy_weight"  # [B] float, 0 masks a frame without an energy label
FORCES_WEIGHT: Final = "forces_weight"  # [B] float, 0 masks a frame without force labels
STRESS_WEIGHT: Final = "stress_weight"  # [B] float, 0 masks a frame without a stress label

# --- bookkeeping ----------------------------------------------------------------------------
FRAME_ID: Final = "frame_id"  # [B] int64, index of the frame in its source file

LABEL_KEYS: Final = (ENERGY, FORCES, STRESS)
WEIGHT_KEYS: Final = {ENERGY: ENERGY_WEIGHT, FORCES: FORCES_WEIGHT, STRESS: STRESS_WEIGHT}

# Units of everything above; recorded with datasets and models.
UNITS: Final = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3"}
