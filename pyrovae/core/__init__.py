"""What every layer uses: one-line errors, registry look-ups, seeds and devices, module-local
Pyro parameters, labels as network inputs, atomic file writes. Imports nothing else of pyrovae."""
