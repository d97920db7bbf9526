"""What every stage and the command share: the model, the wire format, the config, the lifecycle of a
stage process, the self-metrics. Imports no stage package and not the command.
"""
