"""An extended peptide chain from a sequence, built with NeRF from ideal internal coordinates.

Only the backbone (N, CA, C, O) and CB are placed here; PDBFixer adds the remaining side-chain
heavy atoms, OXT and hydrogens from its templates (and relaxes the new atoms). Building in
internal coordinates (Parsons et al., J Comput Chem 2005, "NeRF") makes bond lengths, angles
and the L-chirality at CA exact by construction, which a Cartesian template stack would not.

Geometry is Engh & Huber (1991): an all-trans, beta-strand chain (phi -135, psi +135,
omega 180) is free of clashes for any sequence; proline's ring fixes its phi near -63.
"""

from __future__ import annotations

import math

import numpy as np

from sims.structure import THREE_LETTER, parse_sequence

# Bond lengths (Angstrom) and angles (degrees), Engh & Huber 1991.
N_CA, CA_C, C_N, C_O, CA_CB = 1.458, 1.525, 1.329, 1.231, 1.530
ANGLE_N_CA_C, ANGLE_CA_C_N, ANGLE_C_N_CA = 111.2, 116.2, 121.7
ANGLE_CA_C_O, ANGLE_N_C_O, ANGLE_N_CA_CB = 120.8, 123.0, 110.5
#: Dihedral C-N-CA-CB of an L-amino acid (as measured in real structures, about -122).
DIHEDRAL_C_N_CA_CB = -122.6

PHI_STRAND, PSI_STRAND, OMEGA = -135.0, 135.0, 180.0
PHI_PROLINE = -63.0


def place(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float,
          torsion: float) -> np.ndarray:  # fmt: skip
    """NeRF: the atom d with |cd| = bond, angle bcd = angle, dihedral abcd = torsion (deg)."""
    theta, phi = math.radians(angle), math.radians(torsion)
    bc = c - b
    bc /= np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d = np.array([-bond * math.cos(theta),
                  bond * math.sin(theta) * math.cos(phi),
                  bond * math.sin(theta) * math.sin(phi)])  # fmt: skip
    return c + d[0] * bc + d[1] * m + d[2] * n


def extended_backbone(sequence: str) -> list[dict[str, np.ndarray]]:
    """Per residue, a dict atom name -> xyz (Angstrom) for N, CA, C, O and (not Gly) CB."""
    seq = parse_sequence(sequence)
    phis = [PHI_PROLINE if aa == "P" else PHI_STRAND for aa in seq]
    n = np.zeros(3)
    ca = np.array([N_CA, 0.0, 0.0])
    ang = math.radians(180.0 - ANGLE_N_CA_C)
    c = ca + CA_C * np.array([math.cos(ang), math.sin(ang), 0.0])
    residues: list[dict[str, np.ndarray]] = []
    for i, aa in enumerate(seq):
        if i > 0:
            prev = residues[-1]
            n = place(prev["N"], prev["CA"], prev["C"], C_N, ANGLE_CA_C_N, PSI_STRAND)
            ca = place(prev["CA"], prev["C"], n, N_CA, ANGLE_C_N_CA, OMEGA)
            c = place(prev["C"], n, ca, CA_C, ANGLE_N_CA_C, phis[i])
            # The previous carbonyl O lies in the peptide plane, trans to the next CA.
            prev["O"] = place(ca, n, prev["C"], C_O, ANGLE_N_C_O, 0.0)
        atoms = {"N": n, "CA": ca, "C": c}
        if aa != "G":
            # CB from the C side: dihedral C-N-CA-CB fixes L-chirality.
            atoms["CB"] = place(c, n, ca, CA_CB, ANGLE_N_CA_CB, DIHEDRAL_C_N_CA_CB)
        residues.append(atoms)
    # The last carbonyl O: trans to N across CA-C, as psi + 180 would put it.
    last = residues[-1]
    last["O"] = place(last["N"], last["CA"], last["C"], C_O, ANGLE_CA_C_O, PSI_STRAND + 180.0)
    return residues


def extended_chain_pdb(sequence: str, *, chain: str = "A") -> str:
    """PDB text of the extended backbone (+CB) of ``sequence``; input for PDBFixer."""
    seq = parse_sequence(sequence)
    lines = []
    serial = 1
    order = ("N", "CA", "C", "O", "CB")
    for i, (aa, atoms) in enumerate(zip(seq, extended_backbone(seq), strict=True), start=1):
        resname = THREE_LETTER[aa]
        for name in order:
            if name not in atoms:
                continue
            x, y, z = atoms[name]
            lines.append(
                f"ATOM  {serial:5d}  {name:<3s} {resname} {chain}{i:4d}    "
                f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {name[0]:>2s}"
            )
            serial += 1
    lines.append("TER")
    lines.append("END")
    return "\n".join(lines) + "\n"
