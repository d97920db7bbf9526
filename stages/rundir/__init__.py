"""The run directory's files, one module per kind (figures, pauses, the ring, delivery records, config
copies), its safety check and its one private, atomic writer. Imports no stage package.
"""
