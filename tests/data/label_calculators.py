"""ASE calculators for the labelling tests, imported by name (``module:Class``) as a user's would be."""

from pathlib import Path

from ase.calculators.emt import EMT


class LoggedEMT(EMT):
    """EMT that appends one line per calculation to ``log`` and fails on structures marked ``fail``."""

    def __init__(self, log: str, **kwargs):
        super().__init__(**kwargs)
        self.log = Path(log)

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        with self.log.open("a") as handle:
            handle.write(f"{atoms.info.get('tag')}\n")
        if atoms.info.get("fail"):
            raise RuntimeError("SCF did not converge (a stand-in)")
        super().calculate(atoms, properties, system_changes or ["positions"])
