"""Files as data: written whole or not at all (:mod:`project.files.atomic`), and weight files read as plain tensors,
never as code (:mod:`project.files.weights`)."""
