"""Files as data: written whole or not at all (:mod:`project.files.atomic`), weight files read as plain tensors,
never as code (:mod:`project.files.weights`), and CSV cells that a spreadsheet shows as text
(:mod:`project.files.tables`)."""
